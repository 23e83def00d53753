"""What every store stands on: a pool, or one connection inside a transaction."""

from __future__ import annotations

from typing import Any

from relayforge.db.queries import Q

# An asyncpg.Pool, or an asyncpg.Connection in a transaction (asyncpg ships no type hints).
Db = Any


class Store:
    """Named queries over a pool or a connection; methods take keyword arguments and return
    typed rows, so no caller sees SQL or positional parameters."""

    def __init__(self, db: Db) -> None:
        self._db = db


__all__ = ["Db", "Q", "Store"]
