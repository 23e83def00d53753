"""Applies the package's migrations in order, each once, recorded in schema_migrations with a
checksum.

The migrations ship inside the package (the top-level migrations/ folder is mapped in as
`relayforge.migrations`) and are read with importlib.resources. A landed migration is never
edited: when an applied file's checksum no longer matches, the runner refuses to go on.
An advisory lock makes concurrent starters (several containers at once) take turns.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

MIGRATION_LOCK_ID = 0x52454C4159  # "RELAY"
PACKAGE = "relayforge.migrations"


class MigrationDrift(RuntimeError):
    """An applied migration's file changed since it was applied."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str  # the file name without .sql, e.g. 0003_outbox
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    files = resources.files(PACKAGE)
    return sorted((Migration(f.name.removesuffix(".sql"), f.read_text())
                   for f in files.iterdir() if f.name.endswith(".sql")),
                  key=lambda m: m.version)


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None
                  ) -> list[str]:
    """Apply pending migrations; return the versions applied by this call."""
    migrations = available() if migrations is None else migrations
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        done = await _applied(conn, migrations)
        for m in migrations:
            if m.version in done:
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    m.version, m.checksum)
            applied_now.append(m.version)
            log.info("migration applied", extra={"version": m.version})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now


async def _applied(conn: asyncpg.Connection, migrations: list[Migration]) -> set[str]:
    """The applied versions, after checking their files did not change. Rows applied before
    checksums were recorded adopt the file's current checksum."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
    await conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
    files = {m.version: m.checksum for m in migrations}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    for row in rows:
        current = files.get(row["version"])
        if row["checksum"] is None and current is not None:
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
                and files[row["version"]] != row["checksum"]:
            raise MigrationDrift(f"migration {row['version']} was changed after it was applied")
    applied = {r["version"] for r in rows}
    return [v for v in files if v not in applied], sorted(applied - set(files))


async def migrate_url(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
