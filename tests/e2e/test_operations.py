"""Failures an operator must never meet, through real processes."""

from __future__ import annotations

import subprocess
import sys
import uuid

import httpx
import pytest

from tests.support import ADMIN_KEY, ROOT, base_env, read_response

KEY_A = "a2V5LWEta2V5LWEta2V5LWEta2V5LWEta2V5LWEtYWE="  # 32 bytes, base64
KEY_B = "a2V5LWIta2V5LWIta2V5LWIta2V5LWIta2V5LWItYmI="


async def test_a_wrong_master_key_stops_the_start(client, start_server, fresh_database):
    database = fresh_database()
    server = start_server("ingest", database_url=database, SECRETS__MASTER_KEY=KEY_A)
    r = await client.put(f"{server.url}/admin/tenants/{uuid.uuid4()}/secrets/generic",
                         json={"secret": "stored-with-key-a"},
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 201, r.text
    server.stop()

    env = base_env() | {"DATABASE__URL": database, "SECRETS__MASTER_KEY": KEY_B,
                        "SERVER__PORT": "1"}  # it must stop before it ever listens
    out = subprocess.run([sys.executable, "-m", "relayforge", "serve", "--mode", "ingest"],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "relayforge: SECRETS__MASTER_KEY: stored tenant secrets don't decrypt with this key; "
        "start with the key they were stored with"]

    again = start_server("ingest", database_url=database, SECRETS__MASTER_KEY=KEY_A)
    assert (await client.get(f"{again.url}/readyz")).status_code == 200


def test_a_port_in_use_stops_the_start(start_server):
    first = start_server("ingest")
    port = first.url.rsplit(":", 1)[1]
    env = base_env() | {"DATABASE__URL": first.database_url, "SERVER__PORT": port}
    out = subprocess.run([sys.executable, "-m", "relayforge", "serve", "--mode", "ingest"],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"relayforge: SERVER__PORT: 127.0.0.1:{port} is not free (Address already in use); "
        "every process needs a port of its own"]


@pytest.mark.parametrize(("mode", "env", "line"), [
    ("ingest", {"DATABASE__URL": "notaurl"}, "relayforge: configuration error: DATABASE__URL: "
     "not a PostgreSQL URL (expected postgresql://user:password@host:5432/database)"),
    ("ingest", {"DATABASE__URL": "postgresql://postgres@127.0.0.1:5432/rf_no_such_database"},
     'relayforge: DATABASE__URL: InvalidCatalogNameError: database "rf_no_such_database" does '
     "not exist"),
    ("relay", {"AMQP__URL": "amqp://guest:wrong-password@127.0.0.1:5672/"},
     "relayforge: AMQP__URL: ProbableAuthenticationError: ACCESS_REFUSED"),
])
def test_a_service_that_answers_no_stops_the_start_in_one_line(fresh_database, mode, env, line):
    """A bad URL, a database that does not exist, refused credentials: configuration to fix,
    not a service to wait for."""
    env = base_env() | {"DATABASE__URL": fresh_database(), "SERVER__PORT": "0"} | env
    out = subprocess.run([sys.executable, "-m", "relayforge", "serve", "--mode", mode],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2, out.stderr
    [printed] = [x for x in out.stderr.strip().splitlines() if not x.startswith("{")]
    assert printed.startswith(line), printed


def test_a_database_not_up_yet_is_waited_for_then_the_start_goes_on(fresh_database, tmp_path):
    """As an orchestrator starts services together: the database's port answers only after a
    few seconds (a proxy that starts late); meanwhile the server logs one line per try."""
    import time

    from tests.support import LateProxy, free_port

    proxy = LateProxy(("127.0.0.1", 5432), after_seconds=2.5)  # not up yet
    database = fresh_database()
    url = database.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    assert url != database
    served, log = free_port(), tmp_path / "server.log"
    env = base_env() | {"DATABASE__URL": url, "SERVER__PORT": str(served)}
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "relayforge", "serve", "--mode",
                                    "ingest"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not _ready(f"http://127.0.0.1:{served}"):
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        waits = [x for x in log.read_text().splitlines() if "database not reachable yet" in x]
        assert waits and all('"variable":"DATABASE__URL"' in x for x in waits), waits
        assert "Traceback" not in log.read_text()
    finally:
        process.terminate()
        process.wait(20)
        proxy.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_several_workers_of_one_server_still_share_their_port(start_server):
    server = start_server("ingest", SERVER__WORKERS="2")
    assert all(httpx.get(f"{server.url}/healthz").status_code == 200 for _ in range(10))


async def test_a_client_that_aborts_its_body_is_a_499_not_a_500(client, start_server):
    import asyncio

    server = start_server("ingest", LOG__LEVEL="INFO")
    host, port = server.url.removeprefix("http://").split(":")
    for path in ("/webhooks/generic", "/tenants/" + str(uuid.uuid4()) + "/webhooks/github",
                 "/admin/api-keys"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                     f"Authorization: Bearer {ADMIN_KEY}\r\n\r\n{{\"ev".encode())
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
    await asyncio.sleep(0.5)
    metrics = (await client.get(f"{server.url}/metrics")).text
    assert 'route="/webhooks/{source}",status="499"' in metrics
    assert 'route="/tenants/{tenant_id}/webhooks/{source}",status="499"' in metrics
    assert 'route="/admin/api-keys",status="499"' in metrics
    assert 'status="500"' not in metrics
    assert "unhandled error" not in server.log()


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relayforge", *args], env=base_env() | env,
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_doctor_checks_database_broker_handlers_and_kernels(fresh_database):
    from tests.support import amqp_url

    out = _cli("doctor", DATABASE__URL=fresh_database(), AMQP__URL=amqp_url(),
               WORKER__HANDLERS="generic=tests.handlers:recording")
    assert out.returncode == 0, out.stdout
    lines = out.stdout.splitlines()
    assert lines[0] in ("kernels: native", "kernels: python")
    assert "handlers: generic=tests.handlers:recording" in lines
    assert any(line.startswith("database: reachable; migrations ") and "applied" in line
               for line in lines), lines
    assert "broker: RabbitMQ reachable" in lines


@pytest.mark.parametrize("var,value", [
    ("DESTINATIONS__ALLOW_PRIVATE_NETWORKS", "true"),
    ("ADMIN__FALLBACK_API_KEYS_JSON", '[{"key": "k", "role": "admin"}]'),
    ("WEBHOOKS__GENERIC_HMAC_SECRET", "x"),
])
def test_serve_in_production_refuses_private_destinations_and_short_keys(var, value):
    import base64

    production = {"APP_ENV": "production",
                  "SECRETS__MASTER_KEY": base64.b64encode(b"m" * 32).decode(),
                  "WEBHOOKS__GENERIC_HMAC_SECRET": "g" * 32, "WEBHOOKS__GITHUB_SECRET": "h" * 32,
                  "WEBHOOKS__STRIPE_ENDPOINT_SECRET": "whsec_" + "s" * 32,
                  "ADMIN__FALLBACK_API_KEYS_JSON": "[]", "SERVER__PORT": "1"}
    out = _cli("serve", "--mode", "ingest", **{**production, var: value})
    assert out.returncode != 0
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"relayforge: configuration error: {var}"), line


@pytest.mark.parametrize("env,failed", [
    ({"WORKER__HANDLERS": "generic=tests.handlers:no_such_function"}, "handlers: FAILED"),
    ({"DATABASE__URL": "postgresql://postgres@127.0.0.1:1/none"}, "database: FAILED"),
    ({"AMQP__URL": "amqp://guest:guest@127.0.0.1:1/"}, "broker: FAILED"),
])
def test_doctor_exits_non_zero_on_any_failure(env, failed):
    out = _cli("doctor", **env)
    assert out.returncode == 1
    assert any(line.startswith(failed) for line in out.stdout.splitlines()), out.stdout
    assert "Traceback" not in out.stderr


def test_doctor_in_production_reports_every_check_despite_configuration_errors(fresh_database):
    from tests.support import amqp_url

    out = _cli("doctor", APP_ENV="production", SERVER__PORT="99999",
               WORKER__LEASE_SECONDS="nine", DATABASE__URL=fresh_database(), AMQP__URL=amqp_url())
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    failed = [line for line in lines if line.startswith("config: FAILED: ")]
    for var in ("SERVER__PORT", "WORKER__LEASE_SECONDS", "SECRETS__MASTER_KEY",
                "ADMIN__FALLBACK_API_KEYS_JSON"):
        assert any(line.startswith(f"config: FAILED: {var}: ") for line in failed), lines
    assert "master key: not set" in lines
    assert "handlers: default handler only" in lines
    assert any(line.startswith("database: reachable; migrations ") for line in lines), lines
    assert "broker: RabbitMQ reachable" in lines
    assert "Traceback" not in out.stderr


def test_doctor_reports_a_malformed_database_url_in_one_line():
    out = _cli("doctor", DATABASE__URL="notaurl")
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert any(line.startswith("config: FAILED: DATABASE__URL: not a PostgreSQL URL")
               for line in lines), lines
    assert any(line.startswith("database: FAILED: cannot connect: ") for line in lines), lines
    assert "Traceback" not in out.stderr


def test_a_bad_handler_target_stops_serve_before_it_listens(fresh_database):
    out = _cli("serve", "--mode", "all", DATABASE__URL=fresh_database(),
               WORKER__HANDLERS="generic=tests.handlers:no_such_function", SERVER__PORT="1")
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("relayforge: configuration error: WORKER__HANDLERS: cannot load "
                           "'tests.handlers:no_such_function'")


async def test_3000_idle_connections_stop_neither_a_probe_nor_a_webhook(client, start_server):
    import asyncio
    import resource

    import orjson

    from tests.support import new_tenant, sign_generic

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192 <= hard or hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (8192, hard))  # the server inherits it
    server = start_server("ingest")
    host, port = server.url.removeprefix("http://").split(":")
    idle = [await asyncio.open_connection(host, int(port)) for _ in range(3000)]
    try:
        await asyncio.sleep(0.5)
        probe = await client.get(f"{server.url}/healthz", timeout=5)
        assert probe.status_code == 200
        body = orjson.dumps({"event": "through.idle", "data": {"n": uuid.uuid4().hex}})
        r = await client.post(f"{server.url}/webhooks/generic", content=body, timeout=5,
                              headers={"X-Signature": sign_generic(body),
                                       "X-Tenant-Id": new_tenant()})
        assert r.status_code == 202
    finally:
        for _, writer in idle:
            writer.close()


async def test_a_request_whose_headers_never_finish_is_closed(start_server):
    """The header timeout closes a request that never finishes its headers, and (the HTTP
    server has one timer for both) a keep-alive connection idle that long."""
    import asyncio
    import time

    server = start_server("ingest", SERVER__HEADER_READ_TIMEOUT_MS="1500")
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /webhooks/generic HTTP/1.1\r\nHost: x\r\n")  # and nothing more
    await writer.drain()
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 15) == b""  # closed by the server
    assert time.monotonic() - started < 10
    writer.close()

    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers.get("connection") != "close"
    assert await asyncio.wait_for(reader.read(), 15) == b""  # idle, then closed
    writer.close()


async def test_5000_connections_that_never_send_a_byte_are_closed_and_probes_still_answer(
        client, start_server):
    """The HTTP server's header timer starts at a request's first byte, so connections that
    opened and sent nothing were held forever (17,500 of them from one client took the server
    offline). They are closed once SERVER__HEADER_READ_TIMEOUT_MS has passed, and /healthz
    answers within a second all the while."""
    import asyncio
    import os
    import resource
    import time

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 16384 <= hard or hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (16384, hard))  # the server inherits it
    server = start_server("ingest", SERVER__HEADER_READ_TIMEOUT_MS="2000")
    host, port = server.url.removeprefix("http://").split(":")

    def descriptors() -> int:  # of the server's processes
        pid = server.process.pid
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
        return sum(len(os.listdir(f"/proc/{p}/fd")) for p in [pid, *children])

    before = descriptors()
    silent = [await asyncio.open_connection(host, int(port)) for _ in range(5000)]
    opened = time.monotonic()
    try:
        ends = asyncio.gather(*(reader.read() for reader, _ in silent))
        probes = 0
        while not ends.done():
            r = await client.get(f"{server.url}/healthz", timeout=1.0)  # under a second, or fail
            assert r.status_code == 200
            probes += 1
            assert time.monotonic() - opened < 30, "silent connections still open after 30 s"
            await asyncio.sleep(0.2)
        assert all(data == b"" for data in ends.result())  # each closed by the server
        assert probes >= 5  # the probes ran while the 5,000 were open (at least 2 s)
        metrics = (await client.get(f"{server.url}/metrics")).text
        closed = [line for line in metrics.splitlines()
                  if line.startswith("http_silent_connections_closed_total")]
        assert closed and float(closed[0].split()[-1]) >= 5000, closed
        await asyncio.sleep(1.5)  # a few more sweeps: each looks at every descriptor
        assert descriptors() < before + 50  # none kept, none leaked by the sweeps
    finally:
        for _, writer in silent:
            writer.close()


async def test_bodies_that_never_finish_hold_the_budget_only_until_the_body_timeout(
        client, start_server):
    """Clients that declare bodies and stall hold only what they sent of the body budget, and
    only until SERVER__BODY_READ_TIMEOUT_MS, then get a 408 and a closed connection. Before,
    the declared length was reserved up front with no deadline: eight connections that sent
    one byte each of a 256 KiB body took an 8 MiB budget, and every other webhook got 503
    for as long as they stayed open."""
    import asyncio

    import orjson

    from tests.support import new_tenant, sign_generic

    server = start_server("ingest", HARDENING__MAX_INFLIGHT_BODY_BYTES=str(8 << 20),
                          SERVER__BODY_READ_TIMEOUT_MS="3000")
    host, port = server.url.removeprefix("http://").split(":")

    async def stall(sent: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nX-Signature: " + b"0" * 64
                     + b"\r\nContent-Length: 262144\r\n\r\n" + b"x" * sent)
        await writer.drain()
        return reader, writer

    async def webhook() -> httpx.Response:  # 200 kB: more than the gap a full budget leaves
        body = orjson.dumps({"event": "past.the.stalled",
                             "data": {"n": uuid.uuid4().hex, "pad": "x" * 200_000}})
        return await client.post(f"{server.url}/webhooks/generic", content=body, headers={
            "X-Signature": sign_generic(body), "X-Tenant-Id": new_tenant()})

    declared_only = [await stall(1) for _ in range(16)]  # twice what the budget would reserve
    await asyncio.sleep(0.3)
    assert (await webhook()).status_code == 202

    sent_most = [await stall(250_000) for _ in range(12)]  # 4 × 250 kB each: the budget is full
    await asyncio.sleep(0.3)
    refused = await webhook()
    assert refused.status_code == 503 and refused.json()["code"] == "overloaded"

    for reader, writer in declared_only + sent_most:  # each answered at the deadline, closed
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower(), head
        assert b"request_timeout" in await asyncio.wait_for(reader.read(), 15)
        writer.close()
    assert (await webhook()).status_code == 202  # what they held is back


def test_cli_version_help_and_one_line_usage_errors():
    from relayforge import __version__

    assert _cli("--version").stdout.strip() == f"relayforge {__version__}"
    help_text = _cli("--help").stdout
    assert "metrics module" not in help_text and "serve" in help_text
    assert "(default: 86400)" in " ".join(_cli("secrets", "set", "--help").stdout.split())
    for args in (("secrets", "set", "--tenant", "nope", "--provider", "generic"),
                 ("keys", "revoke", "--id", "12"), ("jobs", "reprocess", "--limit", "x"),
                 ("serve", "--mode", "everything")):
        out = _cli(*args)
        assert out.returncode == 2, args
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out


async def test_cli_lists_and_revokes_keys_and_reprocesses_jobs(client, start_server, db):
    from tests.support import new_tenant, sign_generic

    server = start_server("ingest")
    url = server.database_url
    created = _cli("keys", "create", "--role", "viewer", "--name", "on-call", DATABASE__URL=url)
    key, key_id = created.stdout.strip(), created.stderr.split()[2].rstrip(",")
    listed = _cli("keys", "list", DATABASE__URL=url).stdout
    assert key_id in listed and "on-call" in listed and key not in listed
    assert _cli("keys", "revoke", "--id", key_id, DATABASE__URL=url).returncode == 0
    assert "revoked" in _cli("keys", "list", DATABASE__URL=url).stdout
    assert _cli("keys", "revoke", "--id", key_id, DATABASE__URL=url).returncode == 1

    body = b'{"event":"cli.reprocess"}'
    r = await client.post(f"{server.url}/webhooks/generic", content=body,
                          headers={"X-Signature": sign_generic(body), "X-Tenant-Id": new_tenant()})
    job_id = r.json()["job_id"]
    conn = await db(url)
    assert _cli("jobs", "reprocess", "--id", job_id, DATABASE__URL=url).returncode == 1  # pending
    # as if its one attempt had failed for good (this server runs no consumer)
    await conn.execute("UPDATE jobs SET status = 'dead_lettered', attempts = 1 WHERE id = $1",
                       uuid.UUID(job_id))
    await conn.execute("UPDATE jobs SET message_due_at = NULL WHERE id = $1", uuid.UUID(job_id))
    out = _cli("jobs", "reprocess", "--id", job_id, DATABASE__URL=url)
    assert out.returncode == 0 and job_id in out.stdout
    assert await conn.fetchval("SELECT status FROM jobs WHERE id = $1",
                               uuid.UUID(job_id)) == "pending"
    bulk = _cli("jobs", "reprocess", "--source", "GENERIC", DATABASE__URL=url)
    assert bulk.returncode == 0 and bulk.stdout.startswith("0 job(s)")
    # the same actions as the admin API, audited the same way
    audited = [tuple(r) for r in await conn.fetch(
        "SELECT action, target, key_source FROM admin_audit_log WHERE action LIKE 'job.%' "
        "ORDER BY id")]
    assert audited == [("job.reprocess", job_id, "cli"), ("job.reprocess_bulk", "jobs", "cli")]
    refused = _cli("secrets", "set", "--tenant", new_tenant(), "--provider", "generic",
                   "--secret", "x", "--previous-expires-in", "-10", DATABASE__URL=url)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr


def test_every_log_line_is_json_granians_own_included(start_server):
    import orjson

    from tests.support import new_tenant, sign_generic

    server = start_server("ingest", LOG__LEVEL="INFO", LOG__JSON="true")
    body = b'{"event":"logged","data":{}}'
    with httpx.Client() as http:  # routes with and without path parameters, access-logged
        assert http.get(f"{server.url}/admin/jobs").status_code == 401
        assert http.get(f"{server.url}/openapi.json").status_code == 200
        assert http.post(f"{server.url}/webhooks/generic", content=body, headers={
            "X-Signature": sign_generic(body), "X-Tenant-Id": new_tenant()}).status_code == 202
    lines = [orjson.loads(line) for line in server.log().splitlines()]  # each one is JSON
    loggers = {line["logger"] for line in lines}
    assert {"granian", "relayforge.cli"} <= loggers
    assert any(line["message"].startswith("Listening at") for line in lines)
    access = [(line["route"], line["status"], line.get("source"), line.get("code"))
              for line in lines if line["message"] == "request"]
    assert access == [("/admin/jobs", 401, None, "unauthorized"),
                      ("/openapi.json", 200, None, None),
                      ("/webhooks/{source}", 202, "generic", None)]


async def test_an_unreachable_trace_collector_warns_once_a_minute(client, start_server):
    import asyncio

    server = start_server("ingest", LOG__LEVEL="INFO", OTEL__ENABLED="true",
                          OTEL__EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",  # nothing listens
                          OTEL__EXPORTER_OTLP_TIMEOUT_MS="300",
                          OTEL_BSP_SCHEDULE_DELAY="100")  # the SDK's own setting: export often
    for _ in range(30):
        assert (await client.get(f"{server.url}/admin/jobs")).status_code == 401  # a span each
        await asyncio.sleep(0.1)
    await asyncio.sleep(2)
    lines = [line for line in server.log().splitlines() if "opentelemetry" in line]
    assert len(lines) == 1, lines


def test_unknown_settings_are_named_in_a_warning_at_start(start_server):
    server = start_server("ingest", SERVER__PROT="8081", LOG__LEVEL="WARNING")
    assert '"variable":"SERVER__PROT"' in server.log().replace(" ", "")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


async def test_queue_depth_in_flight_pool_and_end_to_end_latency(client, start_server):
    """A relay with no consumer: 30 messages wait in RabbitMQ and its /metrics says so. Then a
    consumer takes them: its /metrics counts 30 end-to-end latencies and nothing left in hand."""
    import asyncio

    from tests.e2e.pipeline_support import FAST, amqp_env, delete_topology, send, wait_for_jobs

    prefix = f"rft.depth.{uuid.uuid4().hex[:8]}"
    ingest = start_server("ingest")
    relay = start_server("relay", database_url=ingest.database_url, **amqp_env(prefix), **FAST)
    try:
        accepted = await asyncio.gather(*(send(client, ingest) for _ in range(30)))
        job_ids = [a["job_id"] for a in accepted]
        await wait_for_jobs(ingest.database_url, job_ids, statuses=("queued",))
        samples = _samples((await client.get(f"{relay.url}/metrics")).text)
        assert samples[("broker_queue_messages", (("queue", "jobs"),))] == 30
        assert samples[("broker_queue_messages", (("queue", "dlq"),))] == 0
        assert samples[("db_pool_connections_max", ())] >= 1
        assert samples[("db_pool_connections_in_use", ())] >= 0

        consume = start_server("consume", database_url=ingest.database_url, **amqp_env(prefix))
        await wait_for_jobs(ingest.database_url, job_ids, statuses=("succeeded",))
        samples = _samples((await client.get(f"{consume.url}/metrics")).text)
        assert samples[("job_end_to_end_seconds_count", ())] == 30
        assert samples[("job_end_to_end_seconds_sum", ())] > 0
        assert samples[("consumer_jobs_in_flight", ())] == 0
        assert samples[("broker_queue_messages", (("queue", "jobs"),))] == 0
    finally:
        await delete_topology(prefix)


async def test_several_workers_export_process_metrics(client, start_server):
    server = start_server("ingest", SERVER__WORKERS="2")
    samples = _samples((await client.get(f"{server.url}/metrics")).text)
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert samples[("db_pool_connections_max", ())] >= 2  # both workers' pools, summed


async def test_every_process_shows_the_pipeline_lag(client, start_server):
    """No relay runs: 50 rows wait. The ingest and the consume process both say so."""
    import asyncio

    from prometheus_client.parser import text_string_to_metric_families

    from tests.e2e.pipeline_support import amqp_env, delete_topology, send

    prefix = f"rft.lag.{uuid.uuid4().hex[:8]}"
    ingest = start_server("ingest")
    consume = start_server("consume", database_url=ingest.database_url, **amqp_env(prefix))
    try:
        await asyncio.gather(*(send(client, ingest) for _ in range(50)))
        await asyncio.sleep(1.1)  # the oldest row is at least a second old
        for server in (ingest, consume):
            text = (await client.get(f"{server.url}/metrics")).text
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for f in text_string_to_metric_families(text) for s in f.samples}
            assert samples[("outbox_pending_count", ())] == 50, server.mode
            assert samples[("jobs_in_state", (("status", "pending"),))] == 50
            assert samples[("outbox_oldest_pending_age_seconds", ())] >= 1
            assert samples[("jobs_oldest_waiting_age_seconds", ())] == 0  # none queued yet
    finally:
        await delete_topology(prefix)
