"""The ingest writer against a real PostgreSQL: what a failed write leaves behind."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from relayforge.db.migrate import available, migrate
from relayforge.errors import Unavailable
from relayforge.events import DomainEvent
from relayforge.ingest import Arrival, IngestWriter
from relayforge.settings import load_settings
from relayforge.stores import Stores
from tests.support import create_database, drop_database


def arrival(tenant: uuid.UUID, evidence: str = "{}", event_id: str | None = None,
            replay_protected: bool = True) -> Arrival:
    event = DomainEvent("stripe", "invoice.paid", event_id or f"evt_{uuid.uuid4().hex}", None,
                        None)
    return Arrival(
        tenant_id=tenant, source="stripe", payload_hash=uuid.uuid4().hex,
        evidence_headers=evidence, body=b"{}", request_id="r", correlation_id="c",
        trace_context="{}", replay_protected=replay_protected, event_type=event.event_type,
        provider_event_id=event.provider_event_id, event_json=event.to_json(),
    )


def unnamed(tenant: uuid.UUID, body: bytes) -> Arrival:
    """A webhook without an event id: its dedup key is its body's hash."""
    a = arrival(tenant, replay_protected=False)
    a.provider_event_id, a.body, a.payload_hash = None, body, hashlib.sha256(body).hexdigest()
    return a


# The job upsert of the release before this one's jobs_key: it names the key's own index.
UPSERT_OF_THE_RELEASE_BEFORE = (
    "INSERT INTO jobs (id, tenant_id, source, dedup_key, event_type, event, max_attempts,"
    " first_inbox_id, last_inbox_id) VALUES ($1, $2, 'stripe', $3, 'invoice.paid', '\\x7b7d',"
    " 3, $1, $1) ON CONFLICT (tenant_id, source, dedup_key)"
    " DO UPDATE SET last_inbox_id = EXCLUDED.last_inbox_id RETURNING id")


@pytest.fixture
async def mid_upgrade():
    """A database upgraded to this release whose upgrade is not finished: the release before
    may still be running on it."""
    name, url = await create_database(prefix="rf_roll")
    conn = await asyncpg.connect(url)
    await migrate(conn, [m for m in available() if m.version < "0033"])
    assert await migrate(conn) == [m.version for m in available()  # 0034 waits
                                   if m.version >= "0033" and not m.finishes_an_upgrade]
    pool = await asyncpg.create_pool(url, min_size=1, max_size=3)
    yield conn, pool
    await pool.close()
    await conn.close()
    await drop_database(name)


async def test_both_releases_dedupe_onto_one_job_until_the_upgrade_finishes(mid_upgrade):
    """During the roll the release before upserts on jobs_dedup and this one on jobs_key: a key
    either writes first is one job for both. Finishing drops jobs_dedup, which the release
    before can no longer write without, and this one dedupes as before."""
    conn, pool = mid_upgrade
    writer = IngestWriter(Stores(pool), load_settings({}))
    await writer.start()
    tenant = uuid.uuid4()
    try:
        older = await conn.fetchval(UPSERT_OF_THE_RELEASE_BEFORE, uuid.uuid4(), tenant,
                                    "provider:evt_old_first")
        again = arrival(tenant, event_id="evt_old_first", replay_protected=False)
        await writer.record(again)
        assert (again.failure, again.job_id, again.job_created) == (None, older, False)

        newer = arrival(tenant, event_id="evt_new_first", replay_protected=False)
        await writer.record(newer)
        assert newer.failure is None and newer.job_created
        assert await conn.fetchval(UPSERT_OF_THE_RELEASE_BEFORE, uuid.uuid4(), tenant,
                                   "provider:evt_new_first") == newer.job_id
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 2

        hashed = unnamed(tenant, b'{"n": 1}')  # stored whole while the release before runs
        await writer.record(hashed)
        assert await conn.fetchval("SELECT dedup_key FROM jobs WHERE id = $1",
                                   hashed.job_id) == f"hash:{hashed.payload_hash}"

        assert await migrate(conn, finish=True) == [m.version for m in available()
                                                    if m.finishes_an_upgrade]
        with pytest.raises(asyncpg.InvalidColumnReferenceError):  # no index names its key
            await conn.fetchval(UPSERT_OF_THE_RELEASE_BEFORE, uuid.uuid4(), tenant, "provider:x")
        last = arrival(tenant, event_id="evt_old_first", replay_protected=False)
        await writer.record(last)
        assert (last.failure, last.job_id, last.job_created) == (None, older, False)
    finally:
        await writer.close()

    # A writer started after the finish leaves out a key that is its body's hash.
    writer = IngestWriter(Stores(pool), load_settings({}))
    await writer.start()
    try:
        compact, again, before = (unnamed(tenant, b'{"n": 2}'), unnamed(tenant, b'{"n": 2}'),
                                  unnamed(tenant, b'{"n": 1}'))
        for d in (compact, again, before):
            await writer.record(d)
        assert [(d.failure, d.job_created) for d in (compact, again, before)] == [
            (None, True), (None, False), (None, False)]
        assert (again.job_id, before.job_id) == (compact.job_id, hashed.job_id)
        # neither its key nor its last delivery is stored (the repeat was its last delivery)
        assert tuple(await conn.fetchrow("SELECT dedup_key, last_inbox_id FROM jobs WHERE id = $1",
                                         compact.job_id)) == (None, again.inbox_id)
        once = unnamed(tenant, b'{"n": 3}')
        await writer.record(once)
        assert tuple(await conn.fetchrow("SELECT dedup_key, last_inbox_id FROM jobs WHERE id = $1",
                                         once.job_id)) == (None, None)
        shown = await conn.fetch(  # as the admin API and the console read them
            "SELECT m.dedup_key FROM webhook_inbox i, relayforge_inbox_metadata(i) m"
            " WHERE i.job_id = $1", compact.job_id)
        assert [r["dedup_key"] for r in shown] == [f"hash:{compact.payload_hash}"] * 2
    finally:
        await writer.close()


async def test_a_first_delivery_that_meets_another_on_the_old_key_is_written_again(mid_upgrade):
    """Two first deliveries of one key at once, one from each release, may meet in jobs_dedup,
    which this release's upsert does not name: PostgreSQL refuses the second. Injected here
    (a trigger refuses the first write as that race would), the batch is written again and
    the delivery is accepted onto the job the other made."""
    conn, pool = mid_upgrade
    tenant = uuid.uuid4()
    other = await conn.fetchval(UPSERT_OF_THE_RELEASE_BEFORE, uuid.uuid4(), tenant,
                                "provider:evt_raced")
    await conn.execute("""
        CREATE SEQUENCE races;  -- not rolled back with the write it refuses
        CREATE FUNCTION race() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
            IF nextval('races') = 1 THEN
                RAISE unique_violation USING CONSTRAINT = 'jobs_dedup',
                      MESSAGE = 'duplicate key value violates unique constraint "jobs_dedup"';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER race BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION race()""")
    writer = IngestWriter(Stores(pool), load_settings({}))
    await writer.start()
    try:
        raced = arrival(tenant, event_id="evt_raced", replay_protected=False)
        await writer.record(raced)
        assert (raced.failure, raced.job_id, raced.job_created) == (None, other, False)
        assert await conn.fetchval("SELECT last_value FROM races") == 2  # refused, then not
        assert await conn.fetchval("SELECT count(*) FROM webhook_inbox") == 1
    finally:
        await writer.close()


async def test_a_dedup_key_is_held_by_the_sha256_of_its_bytes(database):
    """Event ids are the provider's bytes: backslashes and escapes in them are themselves (the
    digest reads a text's UTF-8 bytes, never an escape sequence), so ids that would decode
    alike stay two jobs, and each is deduped on its repeat. The digest ingest stores is the
    one PostgreSQL computes for a row written without it."""
    pool = database
    writer = IngestWriter(Stores(pool), load_settings({}))
    await writer.start()
    tenant = uuid.uuid4()
    ids = ["evt_A", "evt_\\101", "evt_\\x41", "evt_\\", "évt_\\\\"]
    try:
        firsts = [arrival(tenant, event_id=i, replay_protected=False) for i in ids]
        repeats = [arrival(tenant, event_id=i, replay_protected=False) for i in ids]
        for d in firsts + repeats:
            await writer.record(d)
        assert [d.failure for d in firsts + repeats] == [None] * 10
        assert all(d.job_created for d in firsts) and not any(d.job_created for d in repeats)
        assert [d.job_id for d in repeats] == [d.job_id for d in firsts]
        assert len({d.job_id for d in firsts}) == len(ids)
        for i, first in zip(ids, firsts, strict=True):
            key = f"provider:{i}"
            digest = hashlib.sha256(tenant.bytes + b"stripe\0" + key.encode()).digest()[:16]
            # ingest stores the digest; the index computes the same for rows written without
            assert await pool.fetchrow(
                "SELECT dedup_digest, relayforge_job_key(tenant_id, source, dedup_key) AS sql"
                " FROM jobs WHERE id = $1", first.job_id) == (uuid.UUID(bytes=digest),) * 2
    finally:
        await writer.close()


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
