"""The asyncpg pool, and the embedded PostgreSQL used when no DATABASE__URL is set."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from relayforge.db.queries import Q

log = logging.getLogger(__name__)


# The server went away or cut the connection (restart, failover, pg_terminate_backend), or the
# client's protocol state broke with it ("another operation is in progress").
CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InternalClientError,
)


async def on_connection_error(db: asyncpg.Pool | asyncpg.Connection, exc: BaseException
                              ) -> bool:
    """If `exc` means connections died, expire the pool's so the next acquire opens a fresh
    one instead of drawing the next dead one; say whether it was such an error."""
    if not isinstance(exc, CONNECTION_ERRORS):
        return False
    if isinstance(db, asyncpg.Pool):
        await db.expire_connections()
    return True


async def _no_session_state(conn: asyncpg.Connection) -> None:
    """Pool connections never carry session state (no SET, LISTEN or advisory lock: those run
    on connections of their own), so the default reset's round trip on every release is
    skipped. asyncpg still clears listeners and rolls back an unfinished transaction."""


_CONTROL = ("begin", "commit", "rollback")


def statement_name(sql: str) -> str:
    """The named query `sql` is, `begin`/`commit`/`rollback` for transaction control, else
    `other`: a label set that stays small whatever runs."""
    name = _NAMES.get(sql)
    if name is not None:
        return name
    word = sql.lstrip().split(None, 1)[0].rstrip(";").lower() if sql.strip() else ""
    return word if word in _CONTROL else "other"


_NAMES = {sql: name for name, sql in Q.items()}


# How long a connection keeps a prepared statement, and so the plan PostgreSQL settled on for
# it (connect_options).
PLAN_LIFETIME_SECONDS = 30


async def create_pool(url: str, max_size: int,
                      count_statement: Callable[[str], None] | None = None,
                      statement_cache: bool = True) -> asyncpg.Pool:
    """`count_statement(name)` is called after each statement a pool connection runs (a round
    trip to PostgreSQL, whatever it does there): what a webhook costs the one shared server is
    counted, not guessed. `statement_cache` is DATABASE__STATEMENT_CACHE: false behind a pooler
    in transaction mode, where a connection's next statement may run on another server
    connection."""
    async def init(conn: asyncpg.Connection) -> None:
        if count_statement is not None:
            counted = count_statement

            def logged(record: Any) -> None:
                counted(statement_name(record.query))

            conn.add_query_logger(logged)

    return await asyncpg.create_pool(
        url, min_size=1, max_size=max_size, command_timeout=60, reset=_no_session_state,
        init=init, **connect_options(statement_cache),
    )


def connect_options(statement_cache: bool = True,
                    plan_lifetime: float = PLAN_LIFETIME_SECONDS) -> dict[str, Any]:
    """How a pool connection is opened. Every runtime query is one of a fixed set of names, so
    the statement cache needs no cap on its size.

    Plans: after five runs PostgreSQL keeps one plan for a prepared statement, until the tables
    are analyzed (never, where autovacuum is off). With its default `random_page_cost` (4, a
    disk's) a plan made while `jobs` was small reads the whole table for each batch, however
    large it grows. Relayforge reads by index what is in memory (the recent jobs, deliveries and
    inbox rows), where a random read costs about what a sequential one does: at 1.1 the plans of
    a small table read by index too. And no plan is kept longer than `plan_lifetime` seconds:
    the statement is then prepared afresh, for the tables as they are. (Planning every
    execution instead, as force_custom_plan does, took 30 % of PostgreSQL's time per delivery:
    the foreign-key check of each row inserted was planned anew too.)

    Behind a pooler in transaction mode no statement is kept prepared (each is planned anyway),
    and no startup parameter is sent (PgBouncer refuses those it does not know: set them on the
    database instead)."""
    if not statement_cache:
        return {"statement_cache_size": 0}
    return {"server_settings": {"jit": "off", "random_page_cost": "1.1"},
            "max_cached_statement_lifetime": plan_lifetime}


def start_embedded(embedded_dir: str) -> str:
    """Start (or reuse) the embedded PostgreSQL under `embedded_dir` (DATABASE__EMBEDDED_DIR);
    return its URL.

    The server outlives nothing: it stops when the process that started it exits.
    """
    import warnings

    with warnings.catch_warnings():  # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver

    data_dir = Path(embedded_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
    url: str = server.get_uri()
    log.info("embedded postgres started", extra={"data_dir": str(data_dir)})
    return url
