"""The per-request ingest path (INGEST__MODE=single) keeps the same contract as group commit."""

from __future__ import annotations

import asyncio

from tests.e2e.test_webhooks import generic_body, post_generic
from tests.support import new_tenant


async def test_single_mode_dedups_concurrent_deliveries(client, start_server):
    server = start_server("ingest", INGEST__MODE="single")
    tenant = new_tenant()
    body = generic_body()
    results = await asyncio.gather(*(post_generic(client, server, body, tenant) for _ in range(50)))
    assert {r.status_code for r in results} == {202}
    assert len({r.json()["job_id"] for r in results}) == 1
    assert sum(r.json()["job_created"] for r in results) == 1
