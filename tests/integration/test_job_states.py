"""The job state machine, row by row, on the real SQL (queries.sql) of a real PostgreSQL: every
transition is conditional, so late and duplicate messages can't move a job backwards."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import orjson
import pytest

from relayforge.deliveries import DeliveryStatus
from relayforge.events import DomainEvent
from relayforge.ids import new_id
from relayforge.jobs import JobStatus
from relayforge.roles import Role
from relayforge.stores import Stores
from tests.support import create_database, drop_database

LEASE = 60.0


@pytest.fixture
async def conn(template_db):
    name, url = await create_database(template_db)
    connection = await asyncpg.connect(url)
    yield connection
    await connection.close()
    await drop_database(name)


async def new_job(conn: asyncpg.Connection, max_attempts: int = 3) -> uuid.UUID:
    job_id, inbox_id = new_id(), new_id()
    await conn.execute(
        "INSERT INTO jobs (id, tenant_id, source, dedup_key, event_type, event, max_attempts, "
        "first_inbox_id, last_inbox_id, message_due_at) "
        "VALUES ($1, $2, 'generic', $3, 't', $6, $4, $5, $5, now())",
        job_id, uuid.uuid4(), f"hash:{job_id}", max_attempts, inbox_id,
        DomainEvent("generic", "t", None, None, {}).to_json())
    return job_id


async def owed(conn: asyncpg.Connection) -> list[tuple[uuid.UUID, int]]:
    """The messages due now (job, the attempt it starts), as a relay claims them."""
    async with Stores(conn).transaction() as tx:
        return [(r.job_id, r.attempt) for r in await tx.outbox.claim(limit=1000)]


async def state(conn: asyncpg.Connection, job_id: uuid.UUID) -> tuple[str, int]:
    row = await Stores(conn).jobs.state(job_id=job_id)
    assert row is not None
    return row.status, row.attempts


async def start(conn, job_id, attempt):
    return await Stores(conn).jobs.start(job_id=job_id, attempt=attempt, lease_seconds=LEASE)


def jobs(conn):
    return Stores(conn).jobs


def outbox(conn):
    return Stores(conn).outbox


async def expire_lease(conn: asyncpg.Connection, job: uuid.UUID) -> None:
    await conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 s' WHERE id = $1",
                       job)


async def check_values(conn: asyncpg.Connection, constraint: str) -> set[str]:
    definition = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1", constraint)
    return set(re.findall(r"'([a-z_]+)'::text", definition))


async def test_the_states_and_roles_in_code_are_the_tables_checks(conn):
    assert await check_values(conn, "jobs_status_check") == {s.value for s in JobStatus}
    assert await check_values(conn, "deliveries_status_check") == {
        s.value for s in DeliveryStatus}
    assert await check_values(conn, "admin_api_keys_role_check") == {r.value for r in Role}


async def test_a_message_starts_only_the_next_attempt(conn):
    job = await new_job(conn)
    assert await start(conn, job, 2) is None  # not its next attempt
    assert await start(conn, job, 1) is not None
    assert await start(conn, job, 1) is None  # a duplicate delivery
    assert await state(conn, job) == ("processing", 1)


async def test_a_succeeded_job_never_runs_again(conn):
    job = await new_job(conn)
    await start(conn, job, 1)
    assert await jobs(conn).succeed(job_id=job, attempt=1)
    for attempt in (1, 2):
        assert await start(conn, job, attempt) is None
    assert await jobs(conn).succeed(job_id=job, attempt=1) is False
    assert await state(conn, job) == ("succeeded", 1)


async def test_retry_schedules_the_message_of_the_next_attempt_once(conn):
    job = await new_job(conn)
    await start(conn, job, 1)
    assert await jobs(conn).retry(job_id=job, attempt=1, error="boom", delay_seconds=0.0,
                                   trace_context="{}") is True
    assert await jobs(conn).retry(job_id=job, attempt=1, error="boom", delay_seconds=0.0,
                                   trace_context="{}") is False
    assert await state(conn, job) == ("retrying", 1)
    assert await owed(conn) == [(job, 2)]  # one message, for attempt 2
    assert await start(conn, job, 2) is not None
    assert await owed(conn) == []


async def test_a_retry_is_due_after_its_backoff(conn):
    job = await new_job(conn)
    await start(conn, job, 1)
    await jobs(conn).retry(job_id=job, attempt=1, error="boom", delay_seconds=30.0,
                           trace_context='{"traceparent": "00-1-2-01"}')
    assert await owed(conn) == []
    assert 25.0 < (await outbox(conn).next_due()).outbox <= 30.0
    assert await conn.fetchval("SELECT trace_context->>'traceparent' FROM jobs WHERE id = $1",
                               job) == "00-1-2-01"  # the next attempt continues this one


async def test_attempts_are_capped_by_max_attempts(conn):
    job = await new_job(conn, max_attempts=1)
    await start(conn, job, 1)
    await conn.execute("UPDATE jobs SET status = 'retrying' WHERE id = $1", job)
    assert await start(conn, job, 2) is None


async def test_dead_letter_then_reprocess_raises_the_budget(conn):
    job = await new_job(conn, max_attempts=3)
    await start(conn, job, 1)
    assert await jobs(conn).dead_letter(job_id=job, attempt=1, error="permanent")
    assert await state(conn, job) == ("dead_lettered", 1)
    reprocess = {"job_id": job, "limit": 1, "extra_attempts": 3}
    assert await jobs(conn).reprocess(**reprocess) == [job]
    assert await jobs(conn).reprocess(**reprocess) == []  # only dead letters
    row = await conn.fetchrow("SELECT status, max_attempts FROM jobs WHERE id = $1", job)
    assert (row["status"], row["max_attempts"]) == ("pending", 6)
    assert await owed(conn) == [(job, 2)]
    assert await start(conn, job, 2) is not None


async def test_lease_recovery_retries_and_a_late_outcome_still_wins(conn):
    job = await new_job(conn)
    await start(conn, job, 1)
    await expire_lease(conn, job)
    recovered = await jobs(conn).recover_expired(limit=10)
    assert [(r.id, r.status) for r in recovered] == [(job, "retrying")]
    assert await owed(conn) == [(job, 2)]
    # the consumer was slow, not dead: its success for attempt 1 still counts ...
    assert await jobs(conn).succeed(job_id=job, attempt=1) is True
    # ... and the retry the recovery scheduled is dropped
    assert await start(conn, job, 2) is None
    assert await state(conn, job) == ("succeeded", 1)


async def test_a_late_outcome_loses_once_the_next_attempt_started(conn):
    job = await new_job(conn)
    await start(conn, job, 1)
    await expire_lease(conn, job)
    await jobs(conn).recover_expired(limit=10)
    assert await start(conn, job, 2) is not None
    assert await jobs(conn).succeed(job_id=job, attempt=1) is False
    assert await jobs(conn).dead_letter(job_id=job, attempt=1, error="late") is False
    assert await state(conn, job) == ("processing", 2)


async def test_exhausted_lease_recovery_dead_letters(conn):
    job = await new_job(conn, max_attempts=1)
    await start(conn, job, 1)
    await expire_lease(conn, job)
    [row] = await jobs(conn).recover_expired(limit=10)
    assert row.status == "dead_lettered"


async def test_a_claimed_job_is_started_only_after_its_relay_commits(template_db):
    """The relay holds the jobs it publishes locked: a consumer whose copy of the message came
    before the relay marked it sent waits, then starts it; the job never goes back."""
    name, url = await create_database(template_db)
    relay, consumer = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        job = await new_job(relay)
        async with Stores(relay).transaction() as tx:
            [claimed] = await tx.outbox.claim(limit=10)
            starting = asyncio.create_task(start(consumer, job, 1))
            await wait_for_lock(relay, consumer)
            await tx.outbox.mark_sent(job_ids=[claimed.job_id])
        assert await starting is not None
        assert await state(relay, job) == ("processing", 1)
        assert await owed(relay) == []
    finally:
        await relay.close()
        await consumer.close()
        await drop_database(name)


async def wait_for_lock(conn: asyncpg.Connection, waiting: asyncpg.Connection) -> None:
    pid = waiting.get_server_pid()
    for _ in range(500):
        if await conn.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity "
                               "WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the statement never waited for the lock")


async def test_a_claimed_job_is_skipped_and_free_again_when_its_relay_dies(template_db):
    name, url = await create_database(template_db)
    a, b = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        job = await new_job(b)
        tx = a.transaction()
        await tx.start()
        assert [r.job_id for r in await Stores(a).outbox.claim(limit=10)] == [job]
        assert await owed(b) == []  # relay a is publishing it
        a.terminate()  # relay a dies mid-batch: nothing of its claim was written
        assert await owed(b) == [(job, 1)]
    finally:
        await b.close()
        await drop_database(name)


async def test_a_message_carries_the_job_s_trace_context_and_correlation_id(conn):
    traced, plain = await new_job(conn), await new_job(conn)
    await conn.execute("UPDATE jobs SET correlation_id = 'corr-1', "
                       "trace_context = '{\"traceparent\": \"00-x\"}' WHERE id = $1", traced)
    async with Stores(conn).transaction() as tx:
        headers = {r.job_id: orjson.loads(r.headers) for r in await tx.outbox.claim(limit=10)}
    assert headers == {traced: {"traceparent": "00-x", "correlation_id": "corr-1"}, plain: {}}


async def test_a_batch_is_marked_sent_and_queued(conn):
    job_ids = [await new_job(conn) for _ in range(300)]
    async with Stores(conn).transaction() as tx:
        claimed = await tx.outbox.claim(limit=300)
        await tx.outbox.mark_sent(job_ids=[c.job_id for c in claimed])
    assert sorted(c.job_id for c in claimed) == sorted(job_ids)
    assert set(dict(await conn.fetch("SELECT id, status FROM jobs")).values()) == {"queued"}
    assert await outbox(conn).pending_count() == 0


async def test_a_message_refused_again_and_again_sets_its_job_aside(conn):
    job, other = await new_job(conn), await new_job(conn)
    for expected in ([], [job]):
        async with Stores(conn).transaction() as tx:
            await tx.outbox.claim(limit=10)
            assert await tx.outbox.publish_failed(
                failures=[(job, "Refused()")], delay_seconds=0.0, max_failures=2) == expected
            await tx.outbox.release(job_ids=[other], delay_seconds=0.0)
    row = await conn.fetchrow("SELECT status, last_error, publish_failures FROM jobs "
                              "WHERE id = $1", job)
    assert row["status"] == "dead_lettered" and row["publish_failures"] == 2
    assert "could not be published (2 tries): Refused()" in row["last_error"]
    assert await owed(conn) == [(other, 1)]  # released, not counted: due again
    assert await jobs(conn).reprocess(job_id=job, limit=1, extra_attempts=3) == [job]
    assert sorted(await owed(conn)) == sorted([(job, 1), (other, 1)])
    assert await conn.fetchval("SELECT publish_failures FROM jobs WHERE id = $1", job) is None


async def test_a_message_written_by_the_version_before_is_handed_to_its_job(conn):
    """During a rolling upgrade a process of the version before writes outbox rows: each goes
    to its job as the message it owes, and the row goes."""
    job = await new_job(conn)
    await start(conn, job, 1)
    await conn.execute("UPDATE jobs SET status = 'retrying' WHERE id = $1", job)
    await conn.execute("INSERT INTO outbox_messages (job_id, tenant_id, attempt, headers) "
                       "SELECT id, tenant_id, 2, '{\"traceparent\": \"x\"}' FROM jobs "
                       "WHERE id = $1", job)
    assert await owed(conn) == [(job, 2)]
    assert await conn.fetchval("SELECT count(*) FROM outbox_messages") == 0
    assert await conn.fetchval("SELECT trace_context->>'traceparent' FROM jobs") == "x"


async def new_delivery(conn: asyncpg.Connection) -> uuid.UUID:
    job_id, tenant_id = await new_job(conn), uuid.uuid4()
    destination_id, delivery_id = new_id(), new_id()
    await conn.execute(
        "INSERT INTO destinations (id, tenant_id, url) VALUES ($1, $2, 'https://example.com/')",
        destination_id, tenant_id)
    await conn.execute(
        "INSERT INTO deliveries (id, job_id, destination_id, tenant_id, max_attempts) "
        "VALUES ($1, $2, $3, $4, 3)", delivery_id, job_id, destination_id, tenant_id)
    return delivery_id


async def test_a_relay_gives_back_its_own_delivery_claims_after_an_error(conn):
    deliveries = Stores(conn).deliveries
    first, second = await new_delivery(conn), await new_delivery(conn)
    [a] = await deliveries.claim(limit=1, lease_seconds=30.0, owner="relay-a")
    [b] = await deliveries.claim(limit=1, lease_seconds=30.0, owner="relay-b")
    assert {a.id, b.id} == {first, second}
    await deliveries.release_mine(owner="relay-a")
    # only a's delivery is claimable again; b's lease still holds
    assert [d.id for d in await deliveries.claim(limit=10, lease_seconds=30.0,
                                                 owner="relay-c")] == [a.id]


@asynccontextmanager
async def no_deadlock(template_db: str) -> AsyncIterator[asyncpg.Pool]:
    """A fresh database and a pool running six statements at once; fails if PostgreSQL broke a
    deadlock in that database meanwhile (which costs a second each time)."""
    name, url = await create_database(template_db)
    pool = await asyncpg.create_pool(url, min_size=6, max_size=6)
    deadlocks = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    try:
        async with pool.acquire() as conn:
            before = await conn.fetchval(deadlocks)
        yield pool
        await asyncio.sleep(1.0)  # a backend reports its counters within a second of idling
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            assert await conn.fetchval(deadlocks) == before, "PostgreSQL broke a deadlock"
    finally:
        await pool.close()
        await drop_database(name)


async def test_relay_and_consumer_batches_never_deadlock(template_db):
    """Relays claim and mark sent while consumers start the same jobs (their copies of the
    messages came first), each in multi-row statements, many at once: a relay never waits
    (SKIP LOCKED) and consumers take row locks in id order, so PostgreSQL never has to break a
    deadlock."""
    async def relay(stores: Stores, limit: int) -> None:
        async with stores.transaction() as tx:
            claimed = await tx.outbox.claim(limit=limit)
            await asyncio.sleep(0)  # publishing
            await tx.outbox.mark_sent(job_ids=[c.job_id for c in claimed])

    async with no_deadlock(template_db) as pool:
        async with pool.acquire() as conn:
            ids = [await new_job(conn, max_attempts=5) for _ in range(120)]
        stores = Stores(pool)
        rng = random.Random(7)
        for _ in range(40):
            shuffled = rng.sample(ids, len(ids))
            chunks = [shuffled[i::4] for i in range(4)]
            await asyncio.gather(
                relay(stores, 50), relay(stores, 50),
                *(stores.jobs.start_many(attempts=[(j, 1) for j in chunk], lease_seconds=LEASE)
                  for chunk in chunks),
            )
            async with pool.acquire() as conn:  # back to the start for the next round
                await conn.execute("UPDATE jobs SET status = 'pending', attempts = 0, "
                                   "message_due_at = now()")


async def test_fan_out_and_job_batches_never_deadlock(template_db):
    """A consumer's fan-out inserts (each delivery's foreign key locks its job) run beside the
    batches that start and finish the same jobs, many at once, the jobs of each batch in
    random order: every statement takes its job locks in id order, so none deadlocks."""
    from relayforge.stores.destinations import NewDelivery

    async with no_deadlock(template_db) as pool:
        async with pool.acquire() as conn:
            ids = [await new_job(conn, max_attempts=1000) for _ in range(120)]
            destination, tenant = new_id(), uuid.uuid4()
            await conn.execute("INSERT INTO destinations (id, tenant_id, url) "
                               "VALUES ($1, $2, 'https://example.com/')", destination, tenant)
        stores = Stores(pool)
        rng = random.Random(11)
        for round_ in range(1, 31):
            def chunks() -> list[list[uuid.UUID]]:
                shuffled = rng.sample(ids, len(ids))
                return [shuffled[i::3] for i in range(3)]

            await asyncio.gather(
                *(stores.deliveries.fan_out(deliveries=[
                    NewDelivery(new_id(), j, destination, tenant, "{}", "claimed")
                    for j in chunk], jobs={}, max_attempts=3, claim_seconds=30.0)
                  for chunk in chunks()),
                *(stores.jobs.succeed_many(attempts=[(j, round_) for j in chunk])
                  for chunk in chunks()),
            )
            async with pool.acquire() as conn:  # back to processing, the next attempt's
                await conn.execute("DELETE FROM deliveries")
                await conn.execute("UPDATE jobs SET status = 'processing', "
                                   "attempts = attempts + 1")
