"""The inbox's reads by job and by time window on the indexes migration 0036 left (a job's
first delivery found from the job, its repeats by a partial index, windows bounded by the
UUIDv7 id): every delivery of a job once, each window exact, and no read of the whole inbox."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from relayforge.db.queries import Q
from relayforge.ingest import IngestWriter
from relayforge.settings import load_settings
from relayforge.stores import Stores
from tests.integration.test_ingest_writer import arrival
from tests.support import uuid7_at

HISTORY = 20_000  # rows received two days ago, in their own partition


async def insert(conn: asyncpg.Connection, *, received_at: dt.datetime, accepted: bool = True,
                 tenant: uuid.UUID | None = None, job: uuid.UUID | None = None,
                 source: str | None = "generic", id_early: dt.timedelta = dt.timedelta(0),
                 ) -> uuid.UUID:
    """An inbox row received at `received_at` whose id was made `id_early` before it (a
    server clock behind PostgreSQL's)."""
    inbox_id = uuid7_at(received_at - id_early)
    await conn.execute(
        "INSERT INTO webhook_inbox (id, tenant_id, source, headers, body, accepted,"
        " signature_valid, job_id, received_at) VALUES ($1, $2, $3, '{}', '{}', $4, true, $5, $6)",
        inbox_id, tenant or uuid.uuid4(), source, accepted, job, received_at)
    return inbox_id


async def test_each_delivery_of_a_job_is_read_once(database):
    """The delivery that made a job keeps no source and no index entry; its repeats keep
    both. A job written before 0031, whose first delivery kept its source, is read alike."""
    writer = IngestWriter(Stores(database), load_settings({}))
    await writer.start()
    tenant = uuid.uuid4()
    try:
        made, again, third, other = (arrival(tenant, event_id=e, replay_protected=False)
                                     for e in ("evt_a", "evt_a", "evt_a", "evt_b"))
        for delivery in (made, again, third, other):
            await writer.record(delivery)
            assert delivery.failure is None
    finally:
        await writer.close()
    assert made.job_created and again.job_id == third.job_id == made.job_id != other.job_id
    assert await database.fetchval("SELECT source FROM webhook_inbox WHERE id = $1",
                               made.inbox_id) is None

    old_job, old_first, old_repeat = uuid.uuid4(), uuid7_at(dt.datetime.now(dt.UTC)), None
    async with database.acquire() as conn:
        await conn.execute(
            "INSERT INTO jobs (id, tenant_id, source, dedup_key, event_type, event, max_attempts,"
            " first_inbox_id, last_inbox_id) VALUES ($1, $2, 'stripe', 'provider:evt_old',"
            " 'invoice.paid', '\\x7b7d', 3, $3, $3)", old_job, tenant, old_first)
        await conn.execute(
            "INSERT INTO webhook_inbox (id, tenant_id, source, headers, body, accepted,"
            " signature_valid, job_id) VALUES ($1, $2, 'stripe', '{}', '{}', true, true, $3)",
            old_first, tenant, old_job)
        old_repeat = await insert(conn, received_at=await conn.fetchval("SELECT now()"),
                                  tenant=tenant, job=old_job, source="stripe")

    inbox = Stores(database).inbox
    assert [r.id for r in await inbox.for_job(job_id=made.job_id, preview_bytes=8)] == [
        made.inbox_id, again.inbox_id, third.inbox_id]
    assert [r.id for r in await inbox.for_job(job_id=other.job_id, preview_bytes=8)] == [
        other.inbox_id]
    assert [r.id for r in await inbox.for_job(job_id=old_job, preview_bytes=8)] == [
        old_first, old_repeat]
    assert await inbox.for_job(job_id=uuid.uuid4(), preview_bytes=8) == []


async def test_the_time_windows_count_what_was_received_in_them(database):
    """The last 24 hours and the last 60 minutes, each read in one transaction with its rows
    (one now()): rows at either edge, some with ids made two minutes before their receipt."""
    late = dt.timedelta(minutes=2)
    async with database.acquire() as conn, conn.transaction():
        now = await conn.fetchval("SELECT now()")
        await conn.execute("SELECT relayforge_ensure_partitions(current_date - 2, current_date)")
        tenant = uuid.uuid4()
        window = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=59)
        for received_at, accepted, id_early in (
                (now - dt.timedelta(hours=23, minutes=59), True, late),  # in the day
                (now - dt.timedelta(hours=24, minutes=1), True, dt.timedelta(0)),  # before it
                (now - dt.timedelta(minutes=61), True, dt.timedelta(0)),  # before the hour
                (window + dt.timedelta(seconds=1), True, late),  # the hour's first minute
                (now - dt.timedelta(minutes=1), False, late)):  # refused
            await insert(conn, received_at=received_at, accepted=accepted, tenant=tenant,
                         id_early=id_early)

        counts = await conn.fetchrow(Q["admin_inbox_counts"], None)
        assert (counts["accepted"], counts["rejected"]) == (3, 1)
        assert tuple(await conn.fetchrow(Q["admin_inbox_counts"], tenant)) == (3, 1)
        assert tuple(await conn.fetchrow(Q["admin_inbox_counts"], uuid.uuid4())) == (0, 0)

        minutes = await conn.fetch(Q["inbox_per_minute"], 60)
        assert len(minutes) == 60 and minutes[0]["minute"] == window
        assert minutes[0]["accepted"] == 1
        assert sum(m["accepted"] for m in minutes) == 1
        assert sum(m["refused"] for m in minutes) == 1


async def test_no_inbox_read_reaches_rows_it_does_not_need(database):
    """With the inbox's history two days old, a job's deliveries and the windows never read
    that partition whole (before 0036 the windows had their own index on received_at)."""
    async with database.acquire() as conn:
        await conn.execute("SELECT relayforge_ensure_partitions(current_date - 2, current_date)")
        day = await conn.fetchval("SELECT now() - interval '2 days'")
        await conn.execute(  # ids made that day: the day's floor, then random bytes
            "INSERT INTO webhook_inbox (id, tenant_id, source, headers, body, accepted,"
            " signature_valid, job_id, received_at)"
            " SELECT encode(overlay(uuid_send(relayforge_uuid7_floor($1)) PLACING"
            "  substring(uuid_send(gen_random_uuid()) FROM 9) FROM 9), 'hex')::uuid,"
            " gen_random_uuid(), 'generic', '{}', '{}', true, true, gen_random_uuid(), $1"
            " FROM generate_series(1, $2)", day, HISTORY)
        history = await conn.fetchval(
            "SELECT DISTINCT tableoid::regclass::text FROM webhook_inbox WHERE received_at = $1",
            day)
        await conn.execute("ANALYZE webhook_inbox")
        await conn.execute("ANALYZE jobs")
        job = await conn.fetchval(f"SELECT job_id FROM {history} LIMIT 1")

        async def whole_reads() -> int:
            await conn.execute("SELECT pg_stat_force_next_flush()")
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            return await conn.fetchval(
                "SELECT seq_scan FROM pg_stat_user_tables WHERE relid = $1::regclass", history)

        before = await whole_reads()
        inbox = Stores(conn).inbox
        assert len(await inbox.for_job(job_id=job, preview_bytes=8)) == 1
        assert await inbox.for_job(job_id=uuid.uuid4(), preview_bytes=8) == []
        assert (await inbox.counts()).accepted == 0
        assert sum(m.accepted for m in await inbox.per_minute(minutes=60)) == 0
        assert await whole_reads() == before
