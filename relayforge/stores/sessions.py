"""Console sessions: only hashes are kept (the session token's and the API key's)."""

from __future__ import annotations

from dataclasses import dataclass

from relayforge.stores.base import Q, Store


@dataclass(frozen=True, slots=True)
class SessionRow:
    key_hash: str
    csrf: str


class SessionStore(Store):
    async def create(self, *, token_hash: str, key_hash: str, csrf: str, seconds: float) -> None:
        await self._db.execute(Q["console_session_insert"], token_hash, key_hash, csrf,
                               float(seconds))

    async def get(self, *, token_hash: str) -> SessionRow | None:
        row = await self._db.fetchrow(Q["console_session_get"], token_hash)
        return None if row is None else SessionRow(row["key_hash"], row["csrf"])

    async def delete(self, *, token_hash: str) -> None:
        await self._db.execute(Q["console_session_delete"], token_hash)
