"""Retention: the relay process's upkeep prunes what is older than RETENTION__* and keeps
everything else."""

from __future__ import annotations

import uuid

import asyncpg

from relayforge.settings import load_settings
from relayforge.stores import Stores
from relayforge.upkeep import Upkeep
from tests.integration.test_job_states import new_job
from tests.support import create_database, drop_database


async def test_prune_removes_only_what_retention_allows(template_db):
    name, url = await create_database(template_db)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            old_done, old_open, fresh_done = [await new_job(conn) for _ in range(3)]
            await conn.execute("UPDATE jobs SET status = 'succeeded' WHERE id = ANY($1::uuid[])",
                               [old_done, fresh_done])
            await conn.execute("UPDATE jobs SET updated_at = now() - interval '100 days' "
                               "WHERE id = ANY($1::uuid[])", [old_done, old_open])
            await conn.execute("UPDATE outbox_messages SET status = 'sent', sent_at = now() - "
                               "interval '8 days' WHERE job_id = $1", fresh_done)
            tenant = uuid.uuid4()
            await conn.execute(
                "INSERT INTO stripe_event_idempotency (tenant_id, source, event_id, created_at) "
                "VALUES ($1, 'stripe', 'old', now() - interval '31 days'), "
                "($1, 'stripe', 'new', now())", tenant)
            await conn.execute(
                "INSERT INTO admin_audit_log (key_source, role, action, created_at) VALUES "
                "('cli', 'admin', 'old', now() - interval '400 days'), "
                "('cli', 'admin', 'new', now())")
        settings = load_settings({"DATABASE__URL": url})
        assert await Upkeep(Stores(pool), settings).prune() == {
            "outbox_messages": 1, "webhook_inbox": 0, "jobs": 1, "stripe_event_idempotency": 1,
            "tenant_daily_quota_usage": 0, "admin_audit_log": 1}
        async with pool.acquire() as conn:
            jobs = {r["id"] for r in await conn.fetch("SELECT id FROM jobs")}
            assert jobs == {old_open, fresh_done}  # only finished jobs expire
            assert await conn.fetchval(
                "SELECT count(*) FROM outbox_messages WHERE job_id = $1", fresh_done) == 0
            assert [r["event_id"] for r in await conn.fetch(
                "SELECT event_id FROM stripe_event_idempotency")] == ["new"]
            assert [r["action"] for r in await conn.fetch(
                "SELECT action FROM admin_audit_log")] == ["new"]
    finally:
        await pool.close()
        await drop_database(name)


async def old_rows(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO admin_audit_log (key_source, role, action, created_at) VALUES "
        "('cli', 'admin', 'old', now() - interval '400 days'), ('cli', 'admin', 'new', now())")


async def test_one_process_prunes_at_a_time(template_db):
    name, url = await create_database(template_db)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    other = await asyncpg.connect(url)
    try:
        async with pool.acquire() as conn:
            await old_rows(conn)
        upkeep = Upkeep(Stores(pool), load_settings({"DATABASE__URL": url}))
        async with other.transaction():  # another process is pruning
            assert await Stores(other).retention.lock()
            assert await upkeep.prune() is None
            assert await other.fetchval("SELECT count(*) FROM admin_audit_log") == 2
        assert (await upkeep.prune() or {})["admin_audit_log"] == 1  # its turn, once it's done
    finally:
        await other.close()
        await pool.close()
        await drop_database(name)


def test_the_cli_dry_run_counts_and_deletes_nothing_then_a_run_deletes(template_db):
    import asyncio
    import os
    import subprocess
    import sys

    from tests.support import ROOT

    async def setup() -> tuple[str, str]:
        name, url = await create_database(template_db)
        conn = await asyncpg.connect(url)
        await old_rows(conn)
        await conn.close()
        return name, url

    async def audit_rows(url: str) -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM admin_audit_log"))
        finally:
            await conn.close()

    name, url = asyncio.run(setup())
    try:
        env = {**os.environ, "DATABASE__URL": url}
        command = [sys.executable, "-m", "relayforge", "retention", "run"]
        dry = subprocess.run([*command, "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        assert "would delete" in dry.stdout
        assert [line.split() for line in dry.stdout.splitlines() if "admin_audit_log" in line
                ] == [["admin_audit_log", "1", "rows"]]
        assert asyncio.run(audit_rows(url)) == 2
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert "deleted" in done.stdout and "would" not in done.stdout
        assert asyncio.run(audit_rows(url)) == 1
    finally:
        asyncio.run(drop_database(name))
