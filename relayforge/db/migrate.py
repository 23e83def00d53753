"""Applies the package's migrations in order, each once, recorded in schema_migrations with a
checksum.

The migrations ship inside the package (the top-level migrations/ folder is mapped in as
`relayforge.migrations`) and are read with importlib.resources. A landed migration is never
edited: when an applied file's checksum no longer matches, the runner refuses to go on.
An advisory lock makes concurrent starters (several containers at once) take turns.

A migration that drops what only the release before used (its first line is
FINISHES_AN_UPGRADE) waits while that release may still be running beside this one: it is
applied by `relayforge migrate --finish`, run once every process runs this release, or at once
on a new database, where no release before ever ran. Nothing after it depends on it.

An index on a partitioned table is made `ON ONLY` the table by its migration, which takes a
moment; the runner then builds it partition by partition with CREATE INDEX CONCURRENTLY (which
no transaction may hold) and attaches each, so writes never wait for a build. A build cut short
is finished by the next run, before any later migration.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

MIGRATION_LOCK_ID = 0x52454C4159  # "RELAY"
LOCK_POLL_SECONDS = 0.1
PACKAGE = "relayforge.migrations"
FINISHES_AN_UPGRADE = "-- relayforge: finishes an upgrade\n"


# Checksums of other texts of landed migrations that make the schema their file makes now, as
# databases may have applied them. 0025 and 0026 as they first landed (a34c323, the files as
# they are): 0025 defines relayforge_ensure_partitions and 0026 replaces it. 77556e7 edited both
# to one definition in 0025 and none in 0026, and databases migrated at that release recorded
# those texts' checksums; either pair leaves the same function. Such a database adopts the
# files' checksums; any other change to an applied file is still drift.
OTHER_TEXTS: dict[str, frozenset[str]] = {
    "0025_partitioned_history": frozenset(
        {"34af7936ced6b833358c315bdd09e336579fc4fc4d71a5ada5a9ead63749ccc1"}),
    "0026_replay_key_generations": frozenset(
        {"9aa16c23e4c94bad511572c052147c788b3e7c56a3dfe3caa0e4b9364da46668"}),
}


class MigrationDrift(RuntimeError):
    """An applied migration's file changed since it was applied."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str  # the file name without .sql, e.g. 0003_outbox
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def finishes_an_upgrade(self) -> bool:
        return self.sql.startswith(FINISHES_AN_UPGRADE)


def available() -> list[Migration]:
    files = resources.files(PACKAGE)
    return sorted((Migration(f.name.removesuffix(".sql"), f.read_text())
                   for f in files.iterdir() if f.name.endswith(".sql")),
                  key=lambda m: m.version)


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None, *,
                  finish: bool = False) -> list[str]:
    """Apply pending migrations; return the versions applied by this call. Those that finish an
    upgrade only with `finish`, or on a new database."""
    migrations = available() if migrations is None else migrations
    applied_now: list[str] = []
    # Waited for here, not in PostgreSQL: a session waiting in a statement holds a snapshot,
    # which the holder's CREATE INDEX CONCURRENTLY would wait for in turn.
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_ID):
        await asyncio.sleep(LOCK_POLL_SECONDS)
    try:
        done = await _applied(conn, migrations)
        finish = finish or not done
        await _build_partition_indexes(conn)  # what a run before left unfinished, first
        for m in migrations:
            if m.version in done:
                continue
            if m.finishes_an_upgrade and not finish:
                log.warning("migration waits for the upgrade to finish: run `relayforge migrate "
                            "--finish` once every process runs this release",
                            extra={"version": m.version})
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    m.version, m.checksum)
            applied_now.append(m.version)
            log.info("migration applied", extra={"version": m.version})
            await _build_partition_indexes(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now


# Each partition of a table whose partitioned index (made ON ONLY the table) has none attached
# for it yet, with the index's definition, the name its partition's index gets (bare and
# schema-qualified, quoted) and whether an index of that name is left from a build cut short
# (NULL: none; false: invalid).
UNBUILT_PARTITION_INDEXES = """
SELECT parent_index, definition, partition, quote_ident(name) AS name,
       format('%I.%I', schema, name) AS qualified,
       (SELECT indisvalid FROM pg_index
        WHERE indexrelid = to_regclass(format('%I.%I', schema, name))) AS leftover_valid
FROM (
SELECT i.indexrelid::regclass::text AS parent_index, pg_get_indexdef(i.indexrelid) AS definition,
       p.oid::regclass::text AS partition, n.nspname AS schema,
       left(p.relname || '_' || c.relname, 63) AS name
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid AND c.relkind = 'I'
JOIN pg_inherits h ON h.inhparent = i.indrelid
JOIN pg_class p ON p.oid = h.inhrelid
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE NOT i.indisvalid
  AND NOT EXISTS (SELECT 1 FROM pg_inherits hi JOIN pg_index pi ON pi.indexrelid = hi.inhrelid
                  WHERE hi.inhparent = i.indexrelid AND pi.indrelid = p.oid)
) unbuilt
ORDER BY 1, 3
"""


async def _build_partition_indexes(conn: asyncpg.Connection) -> None:
    """Build and attach, one partition at a time and without blocking writes, the partitions'
    indexes of every partitioned index not yet valid (see the module's docstring)."""
    for row in await conn.fetch(UNBUILT_PARTITION_INDEXES):
        if row["leftover_valid"] is False:  # a build cut short leaves an invalid index: again
            await conn.execute(f'DROP INDEX CONCURRENTLY {row["qualified"]}')
        if not row["leftover_valid"]:
            using = row["definition"].split(" USING ", 1)[1]
            await conn.execute(f'CREATE INDEX CONCURRENTLY {row["name"]} '
                               f'ON {row["partition"]} USING {using}')
        await conn.execute(
            f'ALTER INDEX {row["parent_index"]} ATTACH PARTITION {row["qualified"]}')
        log.info("partition index built", extra={"index": row["parent_index"],
                                                 "partition": row["partition"]})


async def unbuilt_partition_indexes(conn: asyncpg.Connection) -> int:
    """How many partitions' indexes a run left to build (`migrate` builds them). Reads only."""
    return len(await conn.fetch(UNBUILT_PARTITION_INDEXES))


async def _applied(conn: asyncpg.Connection, migrations: list[Migration]) -> set[str]:
    """The applied versions, after checking their files did not change. Rows applied before
    checksums were recorded, or from another text of the same schema (OTHER_TEXTS), adopt
    the file's current checksum."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
    await conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
    files = {m.version: m.checksum for m in migrations}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    for row in rows:
        current = files.get(row["version"])
        if current is not None and (row["checksum"] is None or _other_text(row["version"],
                                                                       row["checksum"])):
            await conn.execute("UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                               row["version"], current)
        elif current is not None and row["checksum"] != current:
            raise MigrationDrift(
                f"migration {row['version']} was changed after it was applied; landed "
                "migrations are never edited: restore the file and add a new migration")
    return {r["version"] for r in rows}


async def status(conn: asyncpg.Connection) -> tuple[list[str], list[str]]:
    """(pending versions, applied versions this code doesn't know); raises MigrationDrift when
    an applied file changed. Reads only."""
    migrations = available()
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return [m.version for m in migrations], []
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    files = {m.version: m.checksum for m in migrations}
    for row in rows:
        if row["checksum"] is not None and row["version"] in files \
                and files[row["version"]] != row["checksum"] \
                and not _other_text(row["version"], row["checksum"]):
            raise MigrationDrift(f"migration {row['version']} was changed after it was applied")
    applied = {r["version"] for r in rows}
    return [v for v in files if v not in applied], sorted(applied - set(files))


def _other_text(version: str, checksum: str) -> bool:
    """The checksum of another landed text of this migration that makes the same schema."""
    return checksum in OTHER_TEXTS.get(version, frozenset())


def finishing(versions: list[str]) -> list[str]:
    """Those of these versions that finish an upgrade."""
    finishes = {m.version for m in available() if m.finishes_an_upgrade}
    return [v for v in versions if v in finishes]


async def migrate_url(url: str, *, finish: bool = False) -> tuple[list[str], list[str]]:
    """(versions applied, versions that wait for `finish`)."""
    conn = await asyncpg.connect(url)
    try:
        applied = await migrate(conn, finish=finish)
        pending, _ = await status(conn)
        return applied, finishing(pending)
    finally:
        await conn.close()
