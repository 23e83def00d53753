"""Relayforge behind Debian's PgBouncer in transaction mode, as large deployments cap their
connections: `DATABASE__STATEMENT_CACHE=false` through the pooler, LISTEN and migrations on
`DATABASE__LISTEN_URL` (PostgreSQL directly). The pooler has fewer server connections than the
process has clients, so consecutive statements of one client do run on different ones."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.pipeline_support import FAST, amqp_env, delete_topology, wait_for_jobs
from tests.e2e.receiver import Receiver
from tests.support import ADMIN_KEY, free_port, new_tenant, sign_generic

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SERVER_CONNECTIONS = 3  # of PostgreSQL, shared by the server's 10 pool connections


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[int]:
    """PgBouncer (Debian's package; .ci/run installs it) on a free port, transaction mode."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    assert Path(binary).exists(), "needs Debian's pgbouncer (apt-get install pgbouncer)"
    home = Path(tempfile.mkdtemp(prefix="rf-pgbouncer-"))  # outside pytest's root-only tree
    port = free_port()
    (home / "users.txt").write_text('"postgres" ""\n')
    (home / "pgbouncer.ini").write_text(f"""[databases]
* = host=127.0.0.1 port=5432
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {home}/users.txt
pool_mode = transaction
default_pool_size = {SERVER_CONNECTIONS}
max_client_conn = 200
admin_users = postgres
logfile = {home}/pgbouncer.log
""")
    command = [binary, str(home / "pgbouncer.ini")]
    if os.geteuid() == 0:  # it refuses to run as root
        os.chmod(home, 0o777)
        command = ["runuser", "-u", "postgres", "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode:
        assert process.poll() is None and time.monotonic() < deadline, "pgbouncer did not start"
        time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(10)
    shutil.rmtree(home, ignore_errors=True)


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))


def transactions(port: int, database: str) -> int:
    """Transactions PgBouncer carried for `database` (its admin console's SHOW STATS)."""
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-At",
                          "-F", "|", "pgbouncer", "-c", "SHOW STATS"], capture_output=True,
                         text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split("|")
        if fields[0] == database:
            return int(fields[1])
    return 0


async def test_the_pipeline_runs_behind_pgbouncer_in_transaction_mode(
        client, start_server, fresh_database, pgbouncer):
    direct = fresh_database()
    database = urlsplit(direct).path.lstrip("/")
    names = f"rft.pgb.{uuid.uuid4().hex[:8]}"
    receiver = await Receiver().start()
    try:
        server = start_server(
            "all", database_url=through(direct, pgbouncer), **amqp_env(names), **FAST,
            DATABASE__STATEMENT_CACHE="false", DATABASE__LISTEN_URL=direct,
            DATABASE__MIGRATE_ON_START="true", DESTINATIONS__ALLOW_PRIVATE_NETWORKS="true")
        tenant = new_tenant()
        made = await client.post(f"{server.url}/admin/tenants/{tenant}/destinations",
                                 headers=ADMIN, json={"url": f"{receiver.url}/pgb",
                                                      "payload": "event"})
        assert made.status_code == 201, made.text
        secret = made.json()["signing_secret"]

        async def send(i: int) -> str:
            body = orjson.dumps({"event": "order.created", "data": {"n": i}})
            r = await client.post(f"{server.url}/webhooks/generic", content=body, headers={
                "X-Signature": sign_generic(body), "X-Tenant-Id": tenant,
                "Content-Type": "application/json"})
            assert r.status_code == 202, r.text
            return str(r.json()["job_id"])

        jobs = await asyncio.gather(*(send(i) for i in range(40)))
        rows = await wait_for_jobs(direct, jobs)
        assert {r["status"] for r in rows} == {"succeeded"}
        arrived = await receiver.wait_for("/pgb", 40)
        verifier = Webhook(secret)
        assert sorted(verifier.verify(a.body, a.headers)["data"]["n"] for a in arrived) == \
            list(range(40))
        assert transactions(pgbouncer, database) > 40  # it did go through the pooler
    finally:
        await receiver.stop()
        await delete_topology(names)
