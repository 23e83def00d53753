"""tenant_provider_secrets: encrypted rows; several active per tenant and provider (rotation)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from relayforge.models import SecretView, record
from relayforge.stores.base import Q, Store


@dataclass(frozen=True, slots=True)
class SecretRow:
    nonce: bytes
    ciphertext: bytes
    expires_in: float | None  # seconds until it expires; None while current


class SecretStore(Store):
    async def for_tenant(self, *, tenant_id: uuid.UUID, provider: str
                         ) -> tuple[bool, list[SecretRow]]:
        """(managed, active secrets): a managed tenant never falls back to the env secret."""
        rows = await self._db.fetch(Q["secrets_for_tenant"], tenant_id, provider)
        return rows[0]["managed"], [SecretRow(r["nonce"], r["ciphertext"], r["expires_in"])
                                    for r in rows if r["nonce"] is not None]

    async def newest(self, *, limit: int) -> list[tuple[uuid.UUID, str, bytes, bytes]]:
        """(tenant, provider, nonce, ciphertext) of the newest stored secrets."""
        rows = await self._db.fetch(Q["secrets_newest"], limit)
        return [(r["tenant_id"], r["provider"], r["nonce"], r["ciphertext"]) for r in rows]

    async def managed(self, *, limit: int) -> set[tuple[uuid.UUID, str]]:
        """The (tenant, provider) pairs that have DB secrets, at most `limit` of them."""
        rows = await self._db.fetch(Q["secrets_managed"], limit)
        return {(r["tenant_id"], r["provider"]) for r in rows}

    async def mark_managed(self, *, tenant_id: uuid.UUID, provider: str) -> bool:
        """Mark the tenant's provider managed; True only the first time."""
        return await self._db.fetchval(Q["secrets_mark_managed"], tenant_id, provider) is not None

    async def expire_previous(self, *, tenant_id: uuid.UUID, provider: str,
                              in_seconds: float) -> None:
        await self._db.execute(Q["secrets_expire_previous"], tenant_id, provider, in_seconds)

    async def insert(self, *, secret_id: uuid.UUID, tenant_id: uuid.UUID, provider: str,
                     nonce: bytes, ciphertext: bytes, fingerprint: str,
                     expires_in_seconds: float | None = None) -> SecretView:
        row = await self._db.fetchrow(Q["secrets_insert"], secret_id, tenant_id, provider, nonce,
                                      ciphertext, fingerprint, expires_in_seconds)
        return record(SecretView, row)

    async def list(self, *, tenant_id: uuid.UUID, provider: str) -> list[SecretView]:
        rows = await self._db.fetch(Q["secrets_list"], tenant_id, provider)
        return [record(SecretView, r) for r in rows]

    async def retire(self, *, tenant_id: uuid.UUID, provider: str, secret_id: uuid.UUID) -> bool:
        return await self._db.fetchval(Q["secrets_delete"], tenant_id, provider,
                                       secret_id) is not None
