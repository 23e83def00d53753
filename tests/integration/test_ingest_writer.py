"""The ingest writer against a real PostgreSQL: what a failed write leaves behind."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from relayforge.connectors.base import DomainEvent
from relayforge.errors import Unavailable
from relayforge.ingest import Delivery, IngestWriter
from relayforge.settings import load_settings
from tests.support import create_database, drop_database


def delivery(tenant: uuid.UUID, evidence: str = "{}") -> Delivery:
    return Delivery(
        tenant_id=tenant, source="stripe", payload_hash=uuid.uuid4().hex,
        evidence_headers=evidence, body=b"{}", request_id="r", correlation_id="c",
        trace_context="{}", replay_protected=True,
        event=DomainEvent("stripe", "invoice.paid", f"evt_{uuid.uuid4().hex}", None, None),
    )


@pytest.mark.parametrize("mode", ["batch", "single"])
async def test_a_failed_write_reserves_no_quota_and_no_event_id(template_db, mode):
    name, url = await create_database(template_db)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=3)
    settings = load_settings({"HARDENING__TENANT_DAILY_QUOTA": "5", "INGEST__MODE": mode})
    writer = IngestWriter(pool, settings)
    await writer.start()
    tenant = uuid.uuid4()
    try:
        broken = delivery(tenant, evidence="not json")  # the jsonb cast fails the transaction
        with pytest.raises(Unavailable):
            await writer.record(broken)
        assert await pool.fetchval("SELECT used FROM tenant_daily_quota_usage") == 0
        assert await pool.fetchval("SELECT count(*) FROM stripe_event_idempotency") == 0
        # the provider's retry of the same event is accepted
        retry = delivery(tenant)
        retry.event = broken.event
        recorded = await writer.record(retry)
        assert recorded.error is None and recorded.job_created
        assert await pool.fetchval("SELECT used FROM tenant_daily_quota_usage") == 1
    finally:
        await writer.close()
        await pool.close()
        await drop_database(name)
