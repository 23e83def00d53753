"""The plans of the statements every job runs, on a connection opened as the server opens its
own: they follow the tables as they grow, with no ANALYZE (autovacuum off, as on machines that
run without it). A plan made while the tables were small and kept would scan all of jobs for
each batch: the cost per job would grow with the table. The server's connections plan with
random_page_cost 1.1 and keep a prepared statement, and so its plan, for PLAN_LIFETIME_SECONDS
at most (here one second): either keeps the plans right."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from relayforge.db.pool import connect_options
from relayforge.db.queries import Q
from relayforge.ids import new_id
from tests.support import create_database, drop_database

# each statement's arguments after the jobs and attempts of a batch
STATEMENTS = {"jobs_start": (30,), "jobs_succeed": ()}
LIFETIME = 1.0


@pytest.fixture
async def url(template_db):
    """A database whose jobs table holds 20 rows and is never analyzed."""
    name, url = await create_database(template_db)
    setup = await asyncpg.connect(url)
    await setup.execute("ALTER TABLE jobs SET (autovacuum_enabled = false)")
    await grow_jobs(setup, 20)
    await setup.close()
    yield url
    await drop_database(name)


async def grow_jobs(conn: asyncpg.Connection, n: int) -> None:
    await conn.execute(
        "INSERT INTO jobs (id, tenant_id, source, dedup_key, event_type, event, max_attempts, "
        "first_inbox_id, last_inbox_id) SELECT g.id, $1, 'generic', 'hash:' || g.id, 't', '{}', "
        "3, g.id, g.id FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $2)) g",
        uuid.uuid4(), n)


async def run(conn: asyncpg.Connection, name: str, times: int) -> None:
    """`name` for a batch of 8 jobs that do not exist, `times` times over (PostgreSQL keeps a
    plan after five)."""
    for _ in range(times):
        await conn.fetch(Q[name], [new_id() for _ in range(8)], [1] * 8, *STATEMENTS[name])


async def whole_table_reads(conn: asyncpg.Connection) -> int:
    """How many times jobs was read whole, as PostgreSQL counted so far (this backend's counts
    flushed first)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return await conn.fetchval("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'jobs'")


async def reads_after_growth(url: str, name: str, options: dict[str, Any]) -> int:
    """The whole-table reads of jobs by 10 runs of `name` after jobs grew 1,000-fold and a
    kept plan's lifetime went by, on a connection (opened with `options`) that ran it six times
    while jobs was small."""
    conn = await asyncpg.connect(url, **options)
    try:
        await run(conn, name, 6)
        await grow_jobs(conn, 20_000)
        await asyncio.sleep(LIFETIME * 1.5)
        before = await whole_table_reads(conn)
        await run(conn, name, 10)
        return await whole_table_reads(conn) - before
    finally:
        await conn.close()


@pytest.mark.parametrize("name", sorted(STATEMENTS))
async def test_a_hot_statement_reads_jobs_by_index_after_the_table_grows(url, name):
    assert await reads_after_growth(url, name, connect_options(plan_lifetime=LIFETIME)) == 0


@pytest.mark.parametrize("name", sorted(STATEMENTS))
async def test_a_plan_made_small_is_made_again_when_its_lifetime_ends(url, name):
    """PostgreSQL's own costs, with which the plan made small reads the whole table: prepared
    afresh once its lifetime ends, the statement is planned for the table as it is."""
    options = {"max_cached_statement_lifetime": LIFETIME}
    assert await reads_after_growth(url, name, options) == 0


@pytest.mark.parametrize("name", sorted(STATEMENTS))
async def test_a_plan_made_small_and_kept_for_good_reads_the_whole_table(url, name):
    """What the settings are for: PostgreSQL's own costs and a statement kept prepared for good
    read the whole table on every run once it has grown."""
    options = {"max_cached_statement_lifetime": 0}
    assert await reads_after_growth(url, name, options) >= 10
