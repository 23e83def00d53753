"""The per-request ingest path (INGEST__MODE=single) keeps the same contract as group commit."""

from __future__ import annotations

import asyncio

from tests.support import generic_body, new_tenant, post_generic


async def test_single_mode_dedups_concurrent_deliveries(client, start_server):
    server = start_server("ingest", INGEST__MODE="single")
    tenant = new_tenant()
    body = generic_body()
    results = await asyncio.gather(*(post_generic(client, server, body, tenant) for _ in range(50)))
    assert {r.status_code for r in results} == {202}
    assert len({r.json()["job_id"] for r in results}) == 1
    assert sum(r.json()["job_created"] for r in results) == 1


async def test_single_mode_concurrent_requests_respect_the_quota(client, start_server, db):
    import uuid

    server = start_server("ingest", INGEST__MODE="single", HARDENING__TENANT_DAILY_QUOTA="10")
    tenant = new_tenant()
    results = await asyncio.gather(*(post_generic(client, server, generic_body(), tenant)
                                     for _ in range(40)))
    assert sorted(r.status_code for r in results) == [202] * 10 + [429] * 30
    conn = await db(server.database_url)
    assert await conn.fetchval("SELECT used FROM tenant_daily_quota_usage WHERE tenant_id = $1",
                               uuid.UUID(tenant)) == 10
