"""The plans of the statements every job runs, on a connection opened as a consume or relay
process opens its own: they follow the tables as they grow, with no ANALYZE (autovacuum off, as
on machines that run without it). A plan made while the tables were small and kept would scan
all of jobs for each batch: the cost per job would grow with the table."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from relayforge.db.pool import connect_options
from relayforge.db.queries import Q
from relayforge.ids import new_id
from tests.support import create_database, drop_database

# each statement's arguments after the jobs and attempts of a batch (an SQL EXECUTE takes none
# from the protocol)
STATEMENTS = {"jobs_start": ", 30", "jobs_succeed": ""}


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


async def plan_after_growth(conn: asyncpg.Connection, name: str) -> str:
    """The plan `name` runs with once jobs has grown 1,000-fold since it was first run (six
    times: PostgreSQL keeps a generic plan after five)."""
    await conn.execute(f"PREPARE {name} AS {Q[name]}")
    batch = ", ".join(f"'{new_id()}'" for _ in range(8))  # jobs that do not exist
    execute = f"EXECUTE {name}(ARRAY[{batch}]::uuid[], array_fill(1, ARRAY[8]){STATEMENTS[name]})"
    for _ in range(6):
        await conn.fetch(execute)
    await grow_jobs(conn, 20_000)
    rows = await conn.fetch(f"EXPLAIN {execute}")
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("name", sorted(STATEMENTS))
async def test_a_hot_statement_reads_jobs_by_index_after_the_table_grows(url, name):
    conn = await asyncpg.connect(url, **connect_options())
    try:
        plan = await plan_after_growth(conn, name)
    finally:
        await conn.close()
    assert "Seq Scan on jobs" not in plan, plan
    assert "Index Scan using jobs_pkey on jobs" in plan, plan


async def test_without_the_servers_setting_the_plan_made_small_is_kept(url):
    """What the setting is for: the same statement, on a connection opened without it, scans
    the whole table once it has grown."""
    conn = await asyncpg.connect(url)
    try:
        plan = await plan_after_growth(conn, "jobs_start")
    finally:
        await conn.close()
    assert "Seq Scan on jobs" in plan, plan
