"""The job state machine, row by row, on the real SQL (queries.sql) of a real PostgreSQL: every
transition is conditional, so late and duplicate messages can't move a job backwards."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from relayforge.db.queries import Q
from relayforge.ids import new_id
from tests.support import create_database, drop_database

LEASE = 60.0
PREFIX = "job"


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
        "first_inbox_id, last_inbox_id) VALUES ($1, $2, 'generic', $3, 't', '{}', $4, $5, $5)",
        job_id, uuid.uuid4(), f"hash:{job_id}", max_attempts, inbox_id)
    await conn.execute("INSERT INTO outbox_messages (job_id, tenant_id, routing_key, attempt) "
                       "SELECT id, tenant_id, 'job.generic', 1 FROM jobs WHERE id = $1", job_id)
    return job_id


async def state(conn: asyncpg.Connection, job_id: uuid.UUID) -> tuple[str, int]:
    row = await conn.fetchrow(Q["job_state"], job_id)
    return row["status"], row["attempts"]


async def start(conn, job_id, attempt):
    return await conn.fetchrow(Q["job_start"], job_id, attempt, LEASE)


async def test_a_message_starts_only_the_next_attempt(conn):
    job = await new_job(conn)
    assert await start(conn, job, 2) is None  # not its next attempt
    assert await start(conn, job, 1) is not None
    assert await start(conn, job, 1) is None  # a duplicate delivery
    assert await state(conn, job) == ("processing", 1)


async def test_a_succeeded_job_never_runs_again(conn):
    job = await new_job(conn)
    await start(conn, job, 1)
    assert await conn.fetchval(Q["job_succeed"], job, 1)
    for attempt in (1, 2):
        assert await start(conn, job, attempt) is None
    assert await conn.fetchval(Q["job_succeed"], job, 1) is None
    assert await state(conn, job) == ("succeeded", 1)


async def test_retry_schedules_the_next_attempt_once_through_the_outbox(conn):
    job = await new_job(conn)
    await start(conn, job, 1)
    assert await conn.fetchval(Q["job_retry"], job, 1, "boom", 0.0, PREFIX, "{}") == job
    assert await conn.fetchval(Q["job_retry"], job, 1, "boom", 0.0, PREFIX, "{}") is None
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
    assert await conn.fetchval(Q["job_dead_letter"], job, 1, "permanent")
    assert await state(conn, job) == ("dead_lettered", 1)
    reprocess = [None, None, None, 1, 3, PREFIX, job]
    assert await conn.fetchval(Q["jobs_reprocess"], *reprocess) == job
    assert await conn.fetchval(Q["jobs_reprocess"], *reprocess) is None  # only dead letters
    row = await conn.fetchrow("SELECT status, max_attempts FROM jobs WHERE id = $1", job)
    assert (row["status"], row["max_attempts"]) == ("pending", 6)
    assert await start(conn, job, 2) is not None


async def test_lease_recovery_retries_and_a_late_outcome_still_wins(conn):
    job = await new_job(conn)
    await start(conn, job, 1)
    await conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 s' WHERE id = $1", job)
    recovered = await conn.fetch(Q["jobs_recover_expired"], 10, PREFIX)
    assert [(r["id"], r["status"]) for r in recovered] == [(job, "retrying")]
    # the consumer was slow, not dead: its success for attempt 1 still counts ...
    assert await conn.fetchval(Q["job_succeed"], job, 1) == job
    # ... and the retry the recovery scheduled is dropped
    assert await start(conn, job, 2) is None
    assert await state(conn, job) == ("succeeded", 1)


async def test_a_late_outcome_loses_once_the_next_attempt_started(conn):
    job = await new_job(conn)
    await start(conn, job, 1)
    await conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 s' WHERE id = $1", job)
    await conn.fetch(Q["jobs_recover_expired"], 10, PREFIX)
    assert await start(conn, job, 2) is not None
    assert await conn.fetchval(Q["job_succeed"], job, 1) is None
    assert await conn.fetchval(Q["job_dead_letter"], job, 1, "late") is None
    assert await state(conn, job) == ("processing", 2)


async def test_exhausted_lease_recovery_dead_letters(conn):
    job = await new_job(conn, max_attempts=1)
    await start(conn, job, 1)
    await conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 s' WHERE id = $1", job)
    [row] = await conn.fetch(Q["jobs_recover_expired"], 10, PREFIX)
    assert row["status"] == "dead_lettered"


async def test_publish_confirm_never_moves_a_started_job_back_to_queued(conn):
    job = await new_job(conn)
    [claimed] = await conn.fetch(Q["outbox_claim"], 10, 30.0, "relay-a")
    await start(conn, job, 1)  # the delivery beat the confirm
    await conn.execute(Q["outbox_mark_sent"], [claimed["id"]])
    assert await state(conn, job) == ("processing", 1)
    assert await conn.fetchval("SELECT status FROM outbox_messages WHERE id = $1",
                               claimed["id"]) == "sent"


async def test_claimed_rows_are_skipped_until_their_lease_passes(conn):
    await new_job(conn)
    assert len(await conn.fetch(Q["outbox_claim"], 10, 30.0, "relay-a")) == 1
    assert await conn.fetch(Q["outbox_claim"], 10, 30.0, "relay-b") == []  # held by relay-a
    await conn.execute("UPDATE outbox_messages SET claimed_until = now() - interval '1 s'")
    assert len(await conn.fetch(Q["outbox_claim"], 10, 30.0, "relay-b")) == 1  # relay-a died


async def test_a_relay_gives_back_its_own_claims_after_an_error(conn):
    await new_job(conn)
    await new_job(conn)
    await conn.fetch(Q["outbox_claim"], 1, 30.0, "relay-a")
    await conn.fetch(Q["outbox_claim"], 1, 30.0, "relay-b")
    await conn.execute(Q["outbox_release_mine"], "relay-a")
    assert len(await conn.fetch(Q["outbox_claim"], 10, 30.0, "relay-c")) == 1  # only a's row
