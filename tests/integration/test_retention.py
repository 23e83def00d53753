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
        await Upkeep(Stores(pool), settings).prune()
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
