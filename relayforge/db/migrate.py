"""Applies migrations/*.sql in order, each once, recorded in schema_migrations.

An advisory lock makes concurrent starters (several containers at once) take turns: the first
applies, the others find everything applied.
"""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

log = logging.getLogger("relayforge.migrate")

MIGRATION_LOCK_ID = 0x52454C4159  # "RELAY"


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    source_tree = here.parent / "migrations"  # a checkout or an editable install
    return source_tree if source_tree.is_dir() else here / "_migrations"


def available(directory: Path | None = None) -> list[tuple[str, str]]:
    directory = directory or migrations_dir()
    return [(p.stem, p.read_text()) for p in sorted(directory.glob("*.sql"))]


async def migrate(conn: asyncpg.Connection, directory: Path | None = None) -> list[str]:
    """Apply pending migrations; return the versions applied by this call."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in available(directory):
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
            log.info("migration applied", extra={"version": version})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now


async def migrate_url(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
