"""The migration runner against a real PostgreSQL: all tables, once, safe when run concurrently."""

from __future__ import annotations

import asyncio

import asyncpg

from relayforge.db.migrate import available, migrate
from tests import support

CONTRACT_TABLES = {
    "webhook_inbox", "jobs", "outbox_messages", "tenant_provider_secrets", "admin_api_keys",
    "stripe_event_idempotency", "tenant_daily_quota_usage", "admin_audit_log", "schema_migrations",
}


async def test_migrate_creates_every_contract_table_once():
    name, url = await support.create_database(prefix="rf_mig")
    try:
        conn = await asyncpg.connect(url)
        applied = await migrate(conn)
        assert applied == [v for v, _ in available()]
        assert await migrate(conn) == []  # second run: nothing pending
        tables = {r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert CONTRACT_TABLES <= tables
        versions = [r["version"] for r in await conn.fetch(
            "SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == applied
        await conn.close()
    finally:
        await support.drop_database(name)


async def test_concurrent_migrators_take_turns():
    name, url = await support.create_database(prefix="rf_mig")
    try:
        conns = [await asyncpg.connect(url) for _ in range(4)]
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(v for r in results for v in r)
        assert applied == sorted(v for v, _ in available())  # each applied exactly once
        for c in conns:
            await c.close()
    finally:
        await support.drop_database(name)


async def test_migrations_are_ordered_and_named():
    versions = [v for v, _ in available()]
    assert versions == sorted(versions)
    assert all(v[:4].isdigit() for v in versions)
