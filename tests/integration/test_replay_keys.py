"""Replay keys live in generations (one partition of N days each, dropped whole), and a Stripe
event is still refused as a replay on the other side of a generation's boundary: claimed one
after the other, or by two transactions at once, whichever commits first."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg
import pytest

from relayforge.stores.ingest import IngestStore
from relayforge.stores.retention import RetentionStore
from tests.support import create_database, drop_database

SPAN = 30


@pytest.fixture
async def boundary(template_db):
    """Two connections to a fresh database, and the moment one generation ends and the next
    begins, both generations' partitions made."""
    name, url = await create_database(template_db)
    first, second = await asyncpg.connect(url), await asyncpg.connect(url)
    today = dt.datetime.now(dt.UTC).date()
    start = await first.fetchval("SELECT relayforge_generation($1, $2)", today, SPAN)
    end = start + dt.timedelta(days=SPAN)
    await RetentionStore(first).ensure_generations(
        table="stripe_event_idempotency", days=[start, end], span_days=SPAN)
    yield first, second, dt.datetime.combine(end, dt.time(), dt.UTC)
    await first.close()
    await second.close()
    await drop_database(name)


def key() -> tuple[uuid.UUID, str, str]:
    return uuid.uuid4(), "stripe", f"evt_{uuid.uuid4().hex}"


async def claim(conn: asyncpg.Connection, k: tuple[uuid.UUID, str, str], at: dt.datetime
                ) -> bool:
    return k in await IngestStore(conn).claim_events(keys=[k], span_days=SPAN, at=at)


async def test_a_replay_on_the_far_side_of_a_boundary_is_refused(boundary):
    conn, _, end = boundary
    k = key()
    assert await claim(conn, k, end - dt.timedelta(hours=1))
    assert not await claim(conn, k, end + dt.timedelta(hours=1))  # the next generation
    assert k in await IngestStore(conn).seen_events(keys=[k], span_days=SPAN,
                                                    at=end + dt.timedelta(days=SPAN - 1))
    assert await conn.fetchval(  # in its own generation; the replay left no row
        "SELECT count(*) FROM stripe_event_idempotency WHERE event_id = $1", k[2]) == 1
    assert await claim(conn, key()[:2] + (k[2],), end)  # another tenant's: its own key


async def test_two_claims_at_once_across_the_boundary_accept_one(boundary):
    """Before the boundary's last minutes a claim goes into the next generation too: the claim
    on the far side waits on it, and finds a replay."""
    conn, other, end = boundary
    k = key()
    async with other.transaction():
        async with conn.transaction():
            assert await claim(conn, k, end - dt.timedelta(seconds=1))
            late = asyncio.create_task(claim(other, k, end + dt.timedelta(seconds=1)))
            await asyncio.sleep(0.3)
            assert not late.done()  # waits on the first claim's key
        assert await late is False


async def test_the_earlier_claim_that_commits_second_is_tried_again(boundary):
    """The far side's claim commits first: the near side's claim, which it waited on, fails
    with a serialization failure, and tried again, finds a replay."""
    conn, other, end = boundary
    k = key()
    tx = other.transaction()
    await tx.start()
    assert await claim(other, k, end + dt.timedelta(seconds=1))
    async with conn.transaction():
        early = asyncio.create_task(claim(conn, k, end - dt.timedelta(seconds=1)))
        await asyncio.sleep(0.3)
        assert not early.done()
        await tx.commit()
        with pytest.raises(asyncpg.SerializationError):
            await early
    assert await claim(conn, k, end - dt.timedelta(seconds=1)) is False
