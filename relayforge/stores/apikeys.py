"""admin_api_keys: only the SHA-256 of a key is stored."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from relayforge.models import ApiKeyView, record
from relayforge.roles import Role
from relayforge.stores.base import Q, Store


@dataclass(frozen=True, slots=True)
class KeyMatch:
    id: uuid.UUID
    role: Role


class ApiKeyStore(Store):
    async def lookup(self, *, key_hash: str) -> KeyMatch | None:
        row = await self._db.fetchrow(Q["api_key_lookup"], key_hash)
        return None if row is None else KeyMatch(row["id"], Role(row["role"]))

    async def insert(self, *, key_id: uuid.UUID, name: str, key_hash: str, role: Role
                     ) -> ApiKeyView:
        return record(ApiKeyView, await self._db.fetchrow(Q["api_key_insert"], key_id, name,
                                                          key_hash, role))

    async def list(self) -> list[ApiKeyView]:
        return [record(ApiKeyView, r) for r in await self._db.fetch(Q["api_key_list"])]

    async def revoke(self, *, key_id: uuid.UUID) -> bool:
        return await self._db.fetchval(Q["api_key_revoke"], key_id) is not None
