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
        "first_inbox_id, last_inbox_id) VALUES ($1, $2, 'generic', $3, 't', $6, $4, $5, $5)",
        job_id, uuid.uuid4(), f"hash:{job_id}", max_attempts, inbox_id,
        DomainEvent("generic", "t", None, None, {}).to_json())
    await conn.execute("INSERT INTO outbox_messages (job_id, tenant_id, attempt) "
                       "SELECT id, tenant_id, 1 FROM jobs WHERE id = $1", job_id)
    return job_id


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


async def test_retry_schedules_the_next_attempt_once_through_the_outbox(conn):
    job = await new_job(conn)
    await start(conn, job, 1)
    assert await jobs(conn).retry(job_id=job, attempt=1, error="boom", delay_seconds=0.0,
                                   headers="{}") is True
    assert await jobs(conn).retry(job_id=job, attempt=1, error="boom", delay_seconds=0.0,
                                   headers="{}") is False
    assert await state(conn, job) == ("retrying", 1)
    assert [r["attempt"] for r in await conn.fetch(
        "SELECT attempt FROM outbox_messages WHERE job_id = $1 ORDER BY attempt", job)] == [1, 2]
    assert await start(conn, job, 2) is not None


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
    assert await start(conn, job, 2) is not None


async def test_lease_recovery_retries_and_a_late_outcome_still_wins(conn):
    job = await new_job(conn)
    await start(conn, job, 1)
    await expire_lease(conn, job)
    recovered = await jobs(conn).recover_expired(limit=10)
    assert [(r.id, r.status) for r in recovered] == [(job, "retrying")]
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


async def test_publish_confirm_never_moves_a_started_job_back_to_queued(conn):
    job = await new_job(conn)
    [claimed] = await outbox(conn).claim(limit=10, lease_seconds=30.0, owner="relay-a")
    await start(conn, job, 1)  # the delivery beat the confirm
    await outbox(conn).mark_sent(ids=[claimed.id])
    assert await state(conn, job) == ("processing", 1)
    assert await conn.fetchval("SELECT status FROM outbox_messages WHERE id = $1",
                               claimed.id) == "sent"


async def test_claimed_rows_are_skipped_until_their_lease_passes(conn):
    await new_job(conn)
    assert len(await outbox(conn).claim(limit=10, lease_seconds=30.0, owner="relay-a")) == 1
    # held by relay-a
    assert await outbox(conn).claim(limit=10, lease_seconds=30.0, owner="relay-b") == []
    await conn.execute("UPDATE outbox_messages SET claimed_until = now() - interval '1 s'")
    # relay-a died
    assert len(await outbox(conn).claim(limit=10, lease_seconds=30.0, owner="relay-b")) == 1


async def test_a_row_another_relay_claimed_is_due_when_its_claim_lapses(conn):
    await new_job(conn)
    assert (await outbox(conn).next_due()).outbox < 0  # due, unclaimed: claim it now
    await outbox(conn).claim(limit=10, lease_seconds=30.0, owner="relay-a")
    # being published by relay-a: relay-b sleeps until the claim lapses, it doesn't poll
    assert 25.0 < (await outbox(conn).next_due()).outbox <= 30.0


async def test_a_batch_marks_every_row_sent_and_queues_only_the_jobs_not_yet_started(conn):
    job_ids = [await new_job(conn) for _ in range(300)]
    claimed = await outbox(conn).claim(limit=300, lease_seconds=30.0, owner="relay-a")
    started = job_ids[::3]  # their deliveries beat the confirm
    for job in started:
        await start(conn, job, 1)
    await outbox(conn).mark_sent(ids=[c.id for c in claimed])
    assert await conn.fetchval("SELECT count(*) FROM outbox_messages WHERE status = 'sent'") == 300
    statuses = dict(await conn.fetch("SELECT id, status FROM jobs"))
    assert {statuses[j] for j in started} == {"processing"}
    assert {statuses[j] for j in set(job_ids) - set(started)} == {"queued"}


async def test_a_relay_gives_back_its_own_claims_after_an_error(conn):
    await new_job(conn)
    await new_job(conn)
    await outbox(conn).claim(limit=1, lease_seconds=30.0, owner="relay-a")
    await outbox(conn).claim(limit=1, lease_seconds=30.0, owner="relay-b")
    await outbox(conn).release_mine(owner="relay-a")
    # only a's row
    assert len(await outbox(conn).claim(limit=10, lease_seconds=30.0, owner="relay-c")) == 1


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
    """The relay marks rows sent while consumers start and finish the same jobs (the delivery
    beat the confirm), each in multi-row statements, many at once: row locks are taken in id
    order everywhere, so PostgreSQL never has to break a deadlock."""
    async with no_deadlock(template_db) as pool:
        async with pool.acquire() as conn:
            ids = [await new_job(conn, max_attempts=5) for _ in range(120)]
        stores = Stores(pool)
        claimed = await stores.outbox.claim(limit=1000, lease_seconds=30.0, owner="relay")
        by_job = {r.job_id: r.id for r in claimed}
        rng = random.Random(7)
        for _ in range(40):
            shuffled = rng.sample(ids, len(ids))
            chunks = [shuffled[i::5] for i in range(5)]
            await asyncio.gather(
                stores.outbox.mark_sent(ids=[by_job[j] for j in rng.sample(ids, len(ids))]),
                *(stores.jobs.start_many(attempts=[(j, 1) for j in chunk], lease_seconds=LEASE)
                  for chunk in chunks),
            )
            async with pool.acquire() as conn:  # back to the start for the next round
                await conn.execute("UPDATE jobs SET status = 'pending', attempts = 0")
                await conn.execute("UPDATE outbox_messages SET status = 'pending'")


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
                    for j in chunk], max_attempts=3, claim_seconds=30.0) for chunk in chunks()),
                *(stores.jobs.succeed_many(attempts=[(j, round_) for j in chunk])
                  for chunk in chunks()),
            )
            async with pool.acquire() as conn:  # back to processing, the next attempt's
                await conn.execute("DELETE FROM deliveries")
                await conn.execute("UPDATE jobs SET status = 'processing', "
                                   "attempts = attempts + 1")
