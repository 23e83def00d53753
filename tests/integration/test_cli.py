"""The operator's shell through the real CLI on a real database: what the admin API does with
jobs, deliveries and secrets, a dry run that changes nothing, and the audit log of each."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import asyncpg
import orjson
import pytest

from tests.integration.test_job_states import new_delivery
from tests.support import ROOT, create_database, drop_database


@pytest.fixture
def database(template_db):
    name, url = asyncio.run(create_database(template_db))
    yield url
    asyncio.run(drop_database(name))


def cli(url: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "relayforge", *argv], cwd=ROOT, input=stdin,
                         env={**os.environ, "DATABASE__URL": url}, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out


def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()
    return asyncio.run(run())


def dead_lettered_delivery(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A dead-lettered delivery of a dead-lettered job: (job id, delivery id)."""
    async def run() -> tuple[uuid.UUID, uuid.UUID]:
        conn = await asyncpg.connect(url)
        try:
            delivery = await new_delivery(conn)
            await conn.execute("UPDATE deliveries SET status = 'dead_lettered', attempts = 3")
            await conn.execute("UPDATE jobs SET status = 'dead_lettered', attempts = 3, "
                               "max_attempts = 3")
            job = await conn.fetchval("SELECT job_id FROM deliveries WHERE id = $1", delivery)
            return job, delivery
        finally:
            await conn.close()
    return asyncio.run(run())


def test_jobs_list_show_and_reprocess_with_a_dry_run_first(database):
    job, _ = dead_lettered_delivery(database)
    listed = cli(database, "jobs", "list", "--status", "dead_lettered").stdout.split()
    assert listed[:2] == [str(job), "dead_lettered"]
    shown = orjson.loads(cli(database, "jobs", "show", "--id", str(job)).stdout)
    assert (shown["id"], shown["status"], shown["attempts"]) == (str(job), "dead_lettered", 3)

    dry = cli(database, "jobs", "reprocess", "--limit", "10", "--dry-run").stdout
    assert dry.splitlines() == ["1 job(s) would be scheduled again (dry run: nothing done)",
                                str(job)]
    assert [r["status"] for r in fetch(database, "SELECT status FROM jobs")] == ["dead_lettered"]
    assert fetch(database, "SELECT 1 FROM admin_audit_log") == []  # rolled back with the rest

    done = cli(database, "jobs", "reprocess", "--limit", "10").stdout
    assert done.splitlines()[0] == "1 job(s) scheduled again"
    assert [r["status"] for r in fetch(database, "SELECT status FROM jobs")] == ["pending"]
    assert [r["action"] for r in fetch(database, "SELECT action FROM admin_audit_log")] == [
        "job.reprocess_bulk"]


def test_deliveries_reprocess_one_or_by_destination_as_the_admin_api_does(database):
    _, delivery = dead_lettered_delivery(database)
    dry = cli(database, "deliveries", "reprocess", "--id", str(delivery), "--dry-run").stdout
    assert dry.startswith("1 delivery(ies) would be scheduled again")
    assert fetch(database, "SELECT status FROM deliveries")[0]["status"] == "dead_lettered"
    cli(database, "deliveries", "reprocess", "--id", str(delivery))
    [row] = fetch(database, "SELECT status, max_attempts FROM deliveries")
    assert row["status"] == "pending" and row["max_attempts"] > 3
    again = subprocess.run([sys.executable, "-m", "relayforge", "deliveries", "reprocess",
                            "--id", str(delivery)], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "DATABASE__URL": database}, timeout=60)
    assert again.returncode == 1  # no longer dead-lettered: refused in one line, as a 409
    assert again.stderr.strip().splitlines() == [
        "relayforge: only dead_lettered deliveries can be reprocessed; this one is pending"]
    assert [r["action"] for r in fetch(database, "SELECT action FROM admin_audit_log")] == [
        "delivery.reprocess"]


def test_secrets_set_list_and_retire(database):
    """The first stored secret keeps the env fallback valid for the overlap (as the API does);
    retiring that one leaves the new one alone."""
    tenant = str(uuid.uuid4())
    cli(database, "secrets", "set", "--tenant", tenant, "--provider", "generic",
        stdin="a-tenant-secret-of-some-length\n")
    listed = cli(database, "secrets", "list", "--tenant", tenant, "--provider",
                 "generic").stdout.splitlines()
    assert [line.split()[-1] for line in listed][0] == "current" and len(listed) == 2
    assert listed[1].split()[-3] == "until"
    current, previous = (line.split()[0] for line in listed)
    cli(database, "secrets", "retire", "--tenant", tenant, "--provider", "generic", "--id",
        previous)
    left = cli(database, "secrets", "list", "--tenant", tenant, "--provider", "generic").stdout
    assert [line.split()[0] for line in left.splitlines()] == [current]
    assert [r["action"] for r in fetch(database, "SELECT action FROM admin_audit_log "
                                                 "ORDER BY created_at")][-1] == "secret.delete"
