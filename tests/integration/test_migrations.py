"""The migration runner against a real PostgreSQL: all tables, once, safe when run concurrently,
checksums that stop a changed landed migration, and a schema that is always visible in review
(tests/integration/schema.sql is what a fresh database looks like after every migration)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from relayforge.db.migrate import (
    OTHER_TEXTS,
    Migration,
    MigrationDrift,
    available,
    migrate,
)
from relayforge.stores.ingest import NewItem
from tests import support

CONTRACT_TABLES = {
    "webhook_inbox", "jobs", "outbox_messages", "tenant_provider_secrets", "admin_api_keys",
    "stripe_event_idempotency", "tenant_daily_quota_usage", "admin_audit_log", "schema_migrations",
}
HERE = Path(__file__).parent
SNAPSHOT = HERE / "schema.sql"
# 0003 and 0004 as they first landed, before they were edited; 0025 and 0026 as 77556e7 edited them
LEGACY = HERE / "legacy"

SCHEMA_QUERIES = {
    "columns": """
        SELECT table_name || '.' || column_name || ' ' || data_type
               || CASE WHEN is_nullable = 'NO' THEN ' NOT NULL' ELSE '' END
               || COALESCE(' DEFAULT ' || column_default, '') AS line
        FROM information_schema.columns WHERE table_schema = 'public'""",
    "constraints": """
        SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid) AS line
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace""",
    "indexes": """
        SELECT indexdef AS line FROM pg_indexes WHERE schemaname = 'public'""",
    "triggers": """
        SELECT pg_get_triggerdef(oid) AS line FROM pg_trigger
        WHERE NOT tgisinternal AND tgrelid::regclass::text NOT LIKE 'pg_%'""",
    "types": """
        SELECT t.typname || '.' || lpad(a.attnum::text, 2, '0') || ' ' || a.attname || ' '
               || format_type(a.atttypid, a.atttypmod) AS line
        FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
        WHERE t.typnamespace = 'public'::regnamespace AND c.relkind = 'c'""",
    "functions": """
        SELECT pg_get_functiondef(p.oid) AS line FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace""",
}


async def dump_schema(conn: asyncpg.Connection) -> str:
    """The public schema as sorted text: columns, constraints, indexes, triggers, row types,
    functions."""
    out = []
    for section, query in SCHEMA_QUERIES.items():
        lines = sorted(r["line"].strip() for r in await conn.fetch(query))
        out.append(f"-- {section}\n" + "\n".join(lines))
    return "\n\n".join(out) + "\n"


@pytest.fixture
async def empty_db() -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    name, url = await support.create_database(prefix="rf_mig")
    conn = await asyncpg.connect(url)
    yield url, conn
    await conn.close()
    await support.drop_database(name)


async def test_migrate_creates_every_contract_table_once(empty_db):
    _, conn = empty_db
    applied = await migrate(conn)
    assert applied == [m.version for m in available()]
    assert await migrate(conn) == []  # second run: nothing pending
    tables = {r["tablename"] for r in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert CONTRACT_TABLES <= tables
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["checksum"]) for r in rows] == [
        (m.version, m.checksum) for m in available()]


async def test_a_fresh_schema_equals_the_committed_snapshot(empty_db):
    """Set RELAYFORGE_UPDATE_SCHEMA=1 to rewrite the snapshot after adding a migration."""
    _, conn = empty_db
    await migrate(conn)
    schema = await dump_schema(conn)
    if os.environ.get("RELAYFORGE_UPDATE_SCHEMA") == "1":
        SNAPSHOT.write_text(schema)
    assert schema == SNAPSHOT.read_text()


async def test_the_ingest_row_type_has_the_fields_of_new_item_in_order(empty_db):
    """The batch statement takes NewItem tuples as `ingest_row` values: position by position."""
    _, conn = empty_db
    await migrate(conn)
    fields = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'ingest_row'::regclass AND attnum > 0"
        " ORDER BY attnum")
    assert tuple(r["attname"] for r in fields) == NewItem._fields


async def test_a_database_migrated_before_the_edits_reaches_the_same_schema(empty_db):
    """Migrated with 0003 and 0004 as they first landed and no checksums recorded: the runner
    adopts checksums for what was applied and the repair migration brings the schema level."""
    _, conn = empty_db
    await conn.execute("CREATE TABLE schema_migrations ("
                       " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
    for m in available()[:5]:
        legacy = LEGACY / f"{m.version}.sql"
        await conn.execute(legacy.read_text() if legacy.exists() else m.sql)
        await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", m.version)
    assert await dump_schema(conn) != SNAPSHOT.read_text()  # claimed_by, last_grant missing
    applied = await migrate(conn, finish=True)
    assert applied == [m.version for m in available()[5:]]
    assert await dump_schema(conn) == SNAPSHOT.read_text()


async def test_a_database_migrated_with_0025_and_0026_as_77556e7_edited_them_goes_on(empty_db):
    """0025 and 0026 were edited after they first landed (one definition of a function instead
    of a definition and its replacement), then put back as they first landed: a database that
    applied the edited texts, checksums recorded, is not drift. It adopts the files' checksums,
    migrates on to the same schema, and a change to the file beyond those texts is still
    refused."""
    _, conn = empty_db
    other = {v: (LEGACY / f"{v}.sql").read_text() for v in OTHER_TEXTS}
    assert {v: {Migration(v, sql).checksum} for v, sql in other.items()} == {
        v: set(sums) for v, sums in OTHER_TEXTS.items()}
    upto = [m for m in available() if m.version <= max(other)]
    await migrate(conn, [Migration(m.version, other.get(m.version, m.sql)) for m in upto])
    applied = await migrate(conn, finish=True)
    assert applied == [m.version for m in available()[len(upto):]]
    assert await dump_schema(conn) == SNAPSHOT.read_text()
    recorded = dict(await conn.fetch("SELECT version, checksum FROM schema_migrations"))
    assert {v: recorded[v] for v in other} == {
        m.version: m.checksum for m in available() if m.version in other}
    edited = [Migration(m.version, m.sql + "\n-- edited") if m.version in other else m
              for m in available()]
    with pytest.raises(MigrationDrift, match="0025_partitioned_history was changed"):
        await migrate(conn, edited)


async def test_a_changed_applied_migration_stops_the_runner(empty_db):
    _, conn = empty_db
    await migrate(conn)
    edited = [Migration(m.version, m.sql + "\n-- edited") if m.version.startswith("0003")
              else m for m in available()]
    with pytest.raises(MigrationDrift, match="0003_outbox was changed after it was applied"):
        await migrate(conn, edited)


def test_the_cli_refuses_to_start_on_a_changed_migration(empty_db):
    url, _ = empty_db
    env = support.base_env() | {"DATABASE__URL": url}
    command = [sys.executable, "-m", "relayforge", "migrate"]
    assert subprocess.run(command, env=env, capture_output=True, cwd=support.ROOT).returncode == 0
    support.run_sync(_tamper(url))
    for cmd in (command, [sys.executable, "-m", "relayforge", "serve", "--mode", "ingest"]):
        out = subprocess.run(cmd, env=env | {"DATABASE__MIGRATE_ON_START": "true"},
                             capture_output=True, text=True, cwd=support.ROOT, timeout=60)
        assert out.returncode == 1, out.stderr
        assert out.stderr.strip().splitlines() == [
            "relayforge: migration 0002_jobs was changed after it was applied; landed migrations"
            " are never edited: restore the file and add a new migration"]


async def test_an_upgrade_finishes_when_the_operator_says_so(empty_db):
    """On a database an older release migrated, `migrate` (and serve's start) applies what adds
    and leaves what drops the release before's needs, naming it; `migrate --finish` applies it.
    `doctor` tells the two apart."""
    url, conn = empty_db
    await migrate(conn, [m for m in available() if m.version < "0033"])  # the release before
    env = support.base_env() | {"DATABASE__URL": url}

    def relayforge(*args: str) -> list[str]:
        out = subprocess.run([sys.executable, "-m", "relayforge", *args], env=env,
                             capture_output=True, text=True, cwd=support.ROOT, timeout=60)
        return out.stdout.splitlines()

    adding = [m.version for m in available() if m.version >= "0033"
              and not m.finishes_an_upgrade]
    waiting = [m.version for m in available() if m.finishes_an_upgrade]
    assert waiting == ["0034_job_keys_only", "0037_inbox_indexes_by_id_only"]
    waits = (f"2 migration(s) finish the upgrade ({', '.join(waiting)}): run `relayforge"
             " migrate --finish` once every process runs this release")
    assert relayforge("migrate") == [
        f"applied {len(adding)} migration(s): {', '.join(adding)}", waits]
    assert f"database: reachable; migrations {len(available()) - 2}/{len(available())} applied"\
           " (2 finish the upgrade: relayforge migrate --finish applies them once every process"\
           " runs this release)" in relayforge("doctor")
    assert relayforge("migrate") == ["applied 0 migration(s): none pending", waits]
    assert relayforge("migrate", "--finish") == [
        f"applied 2 migration(s): {', '.join(waiting)}"]
    assert await dump_schema(conn) == SNAPSHOT.read_text()


async def _tamper(url: str) -> None:
    conn = await asyncpg.connect(url)
    await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = '0002_jobs'")
    await conn.close()


async def test_concurrent_migrators_take_turns(empty_db):
    url, _ = empty_db
    conns = [await asyncpg.connect(url) for _ in range(4)]
    results = await asyncio.gather(*(migrate(c) for c in conns))
    applied = sorted(v for r in results for v in r)
    assert applied == [m.version for m in available()]  # each applied exactly once
    for c in conns:
        await c.close()


def test_migrations_are_ordered_and_named():
    versions = [m.version for m in available()]
    assert versions == sorted(versions)
    assert all(v[:4].isdigit() and v[4] == "_" for v in versions)
    assert len({v[:4] for v in versions}) == len(versions)


INVALID_INDEXES = "SELECT count(*) FROM pg_index WHERE NOT indisvalid"
INBOX_ROW = ("INSERT INTO webhook_inbox (id, tenant_id, source, headers, body, accepted,"
             " signature_valid) VALUES (relayforge_uuid7(), $1, 'generic', '{}', '{}', true, true)")


async def test_an_index_on_the_inbox_is_built_while_webhooks_keep_arriving(empty_db):
    """0036's indexes are built partition by partition, concurrently: while a build waits for
    an older reader to finish, webhooks are still written, and the build then completes."""
    url, conn = empty_db
    await migrate(conn, [m for m in available() if m.version < "0036"])
    tenant = uuid.uuid4()
    for _ in range(20):
        await conn.execute(INBOX_ROW, tenant)
    reader, writer = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        reader_tx = reader.transaction(isolation="repeatable_read")
        await reader_tx.start()
        await reader.fetchval("SELECT count(*) FROM jobs")  # holds a snapshot, locks no inbox
        migrating = asyncio.create_task(migrate(conn))
        for _ in range(300):  # the build waits for the reader's snapshot
            if await writer.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'CREATE INDEX CONCURRENTLY%'"
                    " AND datname = current_database()"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no concurrent build waited for the reader")
        await writer.execute("SET lock_timeout = '10s'")
        for _ in range(5):  # not one of them waits for the build
            await writer.execute(INBOX_ROW, tenant)
        assert not migrating.done()
        await reader_tx.commit()
        assert "0036_inbox_indexes_by_id" in await migrating
    finally:
        await reader.close()
        await writer.close()
    assert await conn.fetchval(INVALID_INDEXES) == 0
    assert await conn.fetchval("SELECT count(*) FROM webhook_inbox WHERE tenant_id = $1",
                               tenant) == 25


async def test_a_partition_index_build_left_unfinished_is_finished_by_the_next_run(
        empty_db, caplog):
    """A run that applied 0036 and stopped before building its indexes, or halfway through
    one (a crash, a kill): `doctor` counts what is left, and the next `migrate` builds them
    before it applies anything else (here `--finish`, whose 0037 drops the indexes they
    replace)."""
    url, conn = empty_db
    await migrate(conn, [m for m in available() if m.version < "0036"])
    m = next(m for m in available() if m.version == "0036_inbox_indexes_by_id")
    async with conn.transaction():  # as the runner applies it, without the builds after
        await conn.execute(m.sql)
        await conn.execute("INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                           m.version, m.checksum)
    assert await conn.fetchval(INVALID_INDEXES) == 2
    # ... and one partition's build was killed halfway: its index is there, and invalid
    partition = await conn.fetchval(
        "SELECT min(h.inhrelid::regclass::text) FROM pg_inherits h"
        " WHERE h.inhparent = 'webhook_inbox'::regclass")
    leftover = partition + "_webhook_inbox_tenant"
    await conn.execute(f"CREATE INDEX {leftover.split('.')[1]} ON {partition} (tenant_id, id)")
    await conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = $1::regclass",
                       leftover)
    assert await conn.fetchval(INVALID_INDEXES) == 3
    partitions = await conn.fetchval(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'webhook_inbox'::regclass")
    doctor = subprocess.run([sys.executable, "-m", "relayforge", "doctor"],
                            env=support.base_env() | {"DATABASE__URL": url},
                            capture_output=True, text=True, cwd=support.ROOT, timeout=60)
    assert f"{2 * partitions} partition index(es) still to build: relayforge migrate builds"\
           " them" in doctor.stdout, doctor.stdout
    with caplog.at_level(logging.INFO, logger="relayforge.db.migrate"):
        assert "0037_inbox_indexes_by_id_only" in await migrate(conn, finish=True)
    steps = [(r.getMessage(), getattr(r, "version", None)) for r in caplog.records]
    assert steps.index(("migration applied", "0037_inbox_indexes_by_id_only")) > max(
        i for i, (message, _) in enumerate(steps) if message == "partition index built")
    assert [m for m, _ in steps].count("partition index built") == 2 * partitions
    assert await conn.fetchval(INVALID_INDEXES) == 0
    assert await conn.fetchval(
        "SELECT count(*) FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhparent"
        " WHERE c.relname = 'webhook_inbox_tenant'") == await conn.fetchval(
        "SELECT count(*) FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhparent"
        " WHERE c.relname = 'webhook_inbox'")
