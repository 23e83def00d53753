"""tenant_provider_secrets: encrypted rows; several active per tenant and provider (rotation)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from relayforge.models import SecretView, record
from relayforge.stores.base import Q, Store


@dataclass(frozen=True, slots=True)
class SecretRow:
    nonce: bytes
    ciphertext: bytes
    active: bool
    expires_in: float | None  # seconds until it expires; None while current


class SecretStore(Store):
    async def for_tenant(self, *, tenant_id: uuid.UUID, provider: str) -> list[SecretRow]:
        """Every row, expired ones too: a tenant with any never falls back to the env secret."""
        rows = await self._db.fetch(Q["secrets_for_tenant"], tenant_id, provider)
        return [SecretRow(**dict(r)) for r in rows]

    async def newest(self, *, limit: int) -> list[tuple[uuid.UUID, str, bytes, bytes]]:
        """(tenant, provider, nonce, ciphertext) of the newest stored secrets."""
        rows = await self._db.fetch(Q["secrets_newest"], limit)
        return [(r["tenant_id"], r["provider"], r["nonce"], r["ciphertext"]) for r in rows]

    async def managed(self, *, limit: int) -> set[tuple[uuid.UUID, str]]:
        """The (tenant, provider) pairs that have DB secrets, at most `limit` of them."""
        rows = await self._db.fetch(Q["secrets_managed"], limit)
        return {(r["tenant_id"], r["provider"]) for r in rows}

    async def rotate(self, *, secret_id: uuid.UUID, tenant_id: uuid.UUID, provider: str,
                     nonce: bytes, ciphertext: bytes, fingerprint: str,
                     previous_expires_in_seconds: int) -> SecretView:
        """Make the new secret current; the previous ones stay valid for the overlap."""
        async def write(conn: asyncpg.Connection) -> SecretView:
            async with conn.transaction():
                await conn.execute(Q["secrets_expire_previous"], tenant_id, provider,
                                   float(previous_expires_in_seconds))
                row = await conn.fetchrow(Q["secrets_insert"], secret_id, tenant_id, provider,
                                          nonce, ciphertext, fingerprint)
            return record(SecretView, row)

        if isinstance(self._db, asyncpg.Pool):
            async with self._db.acquire() as conn:
                return await write(conn)
        return await write(self._db)

    async def list(self, *, tenant_id: uuid.UUID, provider: str) -> list[SecretView]:
        rows = await self._db.fetch(Q["secrets_list"], tenant_id, provider)
        return [record(SecretView, r) for r in rows]

    async def retire(self, *, tenant_id: uuid.UUID, provider: str, secret_id: uuid.UUID) -> bool:
        return await self._db.fetchval(Q["secrets_delete"], tenant_id, provider,
                                       secret_id) is not None
