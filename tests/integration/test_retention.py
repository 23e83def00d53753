"""Retention: expired day partitions are dropped whole (an inbox day only once no job reads a
body from it), the tables not partitioned yet are pruned by deletes, one process at a time, and
`relayforge retention run --dry-run` says what would go without touching it."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import uuid

import asyncpg

from relayforge import retention
from relayforge.settings import load_settings
from relayforge.stores import Stores
from tests.integration.test_job_states import new_job
from tests.support import ROOT, create_database, drop_database, uuid7_at

DAY = dt.timedelta(days=1)


def days_ago(n: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - n * DAY


async def partitions(conn: asyncpg.Connection, table: str) -> list[str]:
    return [r["name"] for r in await conn.fetch(
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass ORDER BY 1", table)]


async def inbox_row(conn: asyncpg.Connection, at: dt.datetime, job_id: uuid.UUID | None = None
                    ) -> uuid.UUID:
    inbox_id = uuid7_at(at)
    await conn.execute(
        "INSERT INTO webhook_inbox (id, tenant_id, source, payload_hash, accepted, "
        "signature_valid, body, job_id, received_at) VALUES ($1, $2, 'generic', 'h', true, true, "
        "'{}', $3, $4)", inbox_id, uuid.uuid4(), job_id, at)
    return inbox_id


async def old_history(conn: asyncpg.Connection) -> dict[str, uuid.UUID]:
    """Partitions for days long past, with rows: audit 400 days ago, inbox 40 and 41 days ago
    (the first delivery of a job still open on day 40, a duplicate's evidence on day 41)."""
    stores = Stores(conn)
    for n in (400, 41, 40):
        await stores.retention.ensure_partitions(first=days_ago(n).date(), last=days_ago(n).date())
    await conn.execute(
        "INSERT INTO admin_audit_log (key_source, role, action, created_at) VALUES "
        "('cli', 'admin', 'old', $1), ('cli', 'admin', 'new', now())", days_ago(400))
    job = uuid7_at(days_ago(40))  # a job and its first delivery are made together
    first = await inbox_row(conn, days_ago(40), job)
    await conn.execute(
        "INSERT INTO jobs (id, tenant_id, source, dedup_key, event_type, data_path, max_attempts, "
        "first_inbox_id, last_inbox_id, created_at) VALUES ($1, $2, 'generic', 'k', 't', '{}', "
        "3, $3, $3, $4)", job, uuid.uuid4(), first, days_ago(40))
    duplicate = await inbox_row(conn, days_ago(41))
    # replay keys: the generation of 30 days that ended more than 30 days ago, and today's
    for n in (70, 0):
        await stores.retention.ensure_generations(
            table="stripe_event_idempotency", days=[days_ago(n).date()], span_days=30)
        await conn.execute(
            "INSERT INTO stripe_event_idempotency (tenant_id, source, event_id, generation) "
            "VALUES ($1, 'stripe', $2, relayforge_generation($3, 30))", uuid.uuid4(),
            f"evt_{n}", days_ago(n).date())
    return {"job": job, "first": first, "duplicate": duplicate}


async def test_expired_partitions_are_dropped_whole_and_the_rest_is_kept(template_db):
    name, url = await create_database(template_db)
    conn = await asyncpg.connect(url)
    try:
        rows = await old_history(conn)
        fresh = await inbox_row(conn, dt.datetime.now(dt.UTC))
        report = await retention.prune(load_settings({"DATABASE__URL": url}), url)
        assert report is not None
        day = lambda n: days_ago(n).strftime("%Y%m%d")  # noqa: E731
        generation = await conn.fetchval("SELECT relayforge_generation($1, 30)",
                                         days_ago(70).date())
        assert sorted(p.name for p in report.dropped) == [  # empty ones included
            f"admin_audit_log_{day(400)}", f"stripe_event_idempotency_{generation:%Y%m%d}",
            f"webhook_inbox_{day(400)}", f"webhook_inbox_{day(41)}"]
        assert [r["event_id"] for r in await conn.fetch(
            "SELECT event_id FROM stripe_event_idempotency")] == ["evt_0"]
        assert [p.name for p in report.kept] == [f"webhook_inbox_{day(40)}"]  # the job's body
        assert f"webhook_inbox_{day(41)}" not in await partitions(conn, "webhook_inbox")
        assert [r["action"] for r in await conn.fetch("SELECT action FROM admin_audit_log")] \
            == ["new"]
        assert {r["id"] for r in await conn.fetch("SELECT id FROM webhook_inbox")} \
            == {rows["first"], fresh}
        assert await conn.fetchval("SELECT to_regclass($1)",
                                   f"partitions.webhook_inbox_{day(41)}") is None

        # once the job is gone, its day goes too
        await conn.execute("UPDATE jobs SET status = 'succeeded', updated_at = now() - "
                           "interval '100 days' WHERE id = $1", rows["job"])
        report = await retention.prune(load_settings({"DATABASE__URL": url}), url)
        assert report is not None
        assert report.deleted["jobs"] == 1
        assert [p.name for p in report.dropped] == [f"webhook_inbox_{day(40)}"]
        assert [r["id"] for r in await conn.fetch("SELECT id FROM webhook_inbox")] == [fresh]
    finally:
        await conn.close()
        await drop_database(name)


async def test_the_tables_not_partitioned_yet_lose_only_expired_rows(template_db):
    name, url = await create_database(template_db)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            old_done, old_open, fresh_done = [await new_job(conn) for _ in range(3)]
            await conn.execute("UPDATE jobs SET status = 'succeeded' WHERE id = ANY($1::uuid[])",
                               [old_done, fresh_done])
            await conn.execute("UPDATE jobs SET updated_at = now() - interval '100 days' "
                               "WHERE id = ANY($1::uuid[])", [old_done, old_open])
            # a message sent by a version from before the jobs were their own outbox
            await conn.execute(
                "INSERT INTO outbox_messages (job_id, tenant_id, attempt, status, sent_at) "
                "SELECT id, tenant_id, 1, 'sent', now() - interval '8 days' FROM jobs "
                "WHERE id = $1", fresh_done)
        report = await retention.prune(load_settings({"DATABASE__URL": url}), url)
        assert report is not None and report.deleted == {
            "outbox_messages": 1, "jobs": 1, "tenant_daily_quota_usage": 0}
        async with pool.acquire() as conn:
            jobs = {r["id"] for r in await conn.fetch("SELECT id FROM jobs")}
            assert jobs == {old_open, fresh_done}  # only finished jobs expire
            assert await conn.fetchval(
                "SELECT count(*) FROM outbox_messages WHERE job_id = $1", fresh_done) == 0
    finally:
        await pool.close()
        await drop_database(name)


async def test_one_process_prunes_at_a_time(template_db):
    name, url = await create_database(template_db)
    conn = await asyncpg.connect(url)
    other = await asyncpg.connect(url)
    try:
        await old_history(conn)
        settings = load_settings({"DATABASE__URL": url})
        assert await Stores(other).retention.lock()  # another process is pruning
        assert await retention.prune(settings, url) is None
        assert await conn.fetchval("SELECT count(*) FROM admin_audit_log") == 2
        await Stores(other).retention.unlock()
        report = await retention.prune(settings, url)  # its turn, once it's done
        assert report is not None and len(report.dropped) == 4
        assert await conn.fetchval("SELECT count(*) FROM admin_audit_log") == 1
    finally:
        await other.close()
        await conn.close()
        await drop_database(name)


async def test_a_write_that_finds_no_partition_makes_it(template_db):
    """The upkeep makes partitions days ahead; when it has not, the day's first write makes
    it (and says so) instead of failing."""
    name, url = await create_database(template_db)
    conn = await asyncpg.connect(url)
    try:
        stores, kept = Stores(conn), load_settings({}).retention
        # The template may have been made before midnight: bring its days ahead up to today's.
        await retention.ensure_partitions(stores, kept)
        today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        for table in ("webhook_inbox", "admin_audit_log"):
            await conn.execute(f"ALTER TABLE {table} DETACH PARTITION partitions.{table}_{today}")
            await conn.execute(f"DROP TABLE partitions.{table}_{today}")
        made = await retention.ensure_partitions(stores, kept, on_demand=True)
        assert made == 2
        assert f"webhook_inbox_{today}" in await partitions(conn, "webhook_inbox")
        await inbox_row(conn, dt.datetime.now(dt.UTC))
        assert await retention.ensure_partitions(stores, kept) == 0  # nothing left to make
    finally:
        await conn.close()
        await drop_database(name)


def test_the_cli_dry_run_says_what_would_go_and_drops_nothing_then_a_run_drops(template_db):
    async def setup() -> tuple[str, str]:
        name, url = await create_database(template_db)
        conn = await asyncpg.connect(url)
        await old_history(conn)
        await conn.close()
        return name, url

    async def audit_rows(url: str) -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM admin_audit_log"))
        finally:
            await conn.close()

    name, url = asyncio.run(setup())
    old_day = days_ago(400).strftime("%Y%m%d")
    try:
        env = {**os.environ, "DATABASE__URL": url}
        command = [sys.executable, "-m", "relayforge", "retention", "run"]
        dry = subprocess.run([*command, "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        assert f"would drop partition admin_audit_log_{old_day}" in dry.stdout
        assert "kept partition webhook_inbox_" in dry.stdout
        assert asyncio.run(audit_rows(url)) == 2
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert f"dropped partition admin_audit_log_{old_day}" in done.stdout
        assert "would" not in done.stdout
        assert asyncio.run(audit_rows(url)) == 1
    finally:
        asyncio.run(drop_database(name))
