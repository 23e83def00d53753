"""The ingest writer against a real PostgreSQL: what a failed write leaves behind."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from relayforge.errors import Unavailable
from relayforge.events import DomainEvent
from relayforge.ingest import Arrival, IngestWriter
from relayforge.settings import load_settings
from relayforge.stores import Stores
from tests.support import create_database, drop_database


def arrival(tenant: uuid.UUID, evidence: str = "{}") -> Arrival:
    event = DomainEvent("stripe", "invoice.paid", f"evt_{uuid.uuid4().hex}", None, None)
    return Arrival(
        tenant_id=tenant, source="stripe", payload_hash=uuid.uuid4().hex,
        evidence_headers=evidence, body=b"{}", request_id="r", correlation_id="c",
        trace_context="{}", replay_protected=True, event_type=event.event_type,
        provider_event_id=event.provider_event_id, event_json=event.to_json(),
    )


@pytest.fixture
async def database(template_db):
    name, url = await create_database(template_db)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=3)
    yield pool
    await pool.close()
    await drop_database(name)


@pytest.mark.parametrize("mode", ["batch", "single"])
async def test_a_failed_write_reserves_no_quota_and_no_event_id(database, mode):
    pool = database
    settings = load_settings({"HARDENING__TENANT_DAILY_QUOTA": "5", "INGEST__MODE": mode})
    writer = IngestWriter(Stores(pool), settings)
    await writer.start()
    tenant = uuid.uuid4()
    try:
        broken = arrival(tenant, evidence="not json")  # the jsonb cast fails the transaction
        await writer.record(broken)
        assert broken.failure is not None and broken.failure.code == "invalid_payload"
        assert await pool.fetchval("SELECT used FROM tenant_daily_quota_usage") == 0
        assert await pool.fetchval("SELECT count(*) FROM stripe_event_idempotency") == 0
        # the provider's retry of the same event is accepted
        retry = arrival(tenant)
        retry.provider_event_id, retry.event_json = broken.provider_event_id, broken.event_json
        await writer.record(retry)
        assert retry.failure is None and retry.job_created
        assert await pool.fetchval("SELECT used FROM tenant_daily_quota_usage") == 1
    finally:
        await writer.close()


async def test_an_item_the_database_refuses_fails_alone_in_its_batch(database):
    """The batch is written without the item that failed it; every other item is recorded."""
    pool = database
    writer = IngestWriter(Stores(pool), load_settings({"INGEST__BATCH_MAX_SIZE": "64"}))
    await writer.start()
    try:
        items = [arrival(uuid.uuid4()) for _ in range(40)]
        items[17] = arrival(uuid.uuid4(), evidence="not json")
        await asyncio.gather(*(writer.record(d) for d in items))
        codes = [d.failure.code if d.failure else None for d in items]
        assert codes == [None] * 17 + ["invalid_payload"] + [None] * 22
        assert await pool.fetchval("SELECT count(*) FROM jobs") == 39
        assert await pool.fetchval(  # each owes the message of its first attempt
            "SELECT count(*) FROM jobs WHERE message_due_at IS NOT NULL AND attempts = 0") == 39
        assert await pool.fetchval("SELECT sum(used) FROM tenant_daily_quota_usage") == 39
    finally:
        await writer.close()


async def test_an_unreachable_database_is_503_for_the_whole_batch(database):
    writer = IngestWriter(Stores(database), load_settings({}))
    await writer.start()
    await database.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    await database.close()  # nothing can reach it any more
    try:
        with pytest.raises(Unavailable):
            await writer.record(arrival(uuid.uuid4()))
    finally:
        await writer.close()


async def test_a_replay_key_is_per_tenant_and_source(database):
    """Two replay-protected sources may share an event id; a repeat within one is a replay."""
    from relayforge.stores import Stores

    store = Stores(database).ingest
    tenant = uuid.uuid4()
    keys = [(tenant, "stripe", "evt_1"), (tenant, "paddle", "evt_1")]
    now = {"span_days": 30, "at": datetime.now(UTC)}
    assert await store.claim_events(keys=keys, **now) == set(keys)
    assert await store.claim_events(keys=keys, **now) == set()
    assert await store.seen_events(keys=[*keys, (tenant, "other", "evt_1")], **now) == set(keys)
