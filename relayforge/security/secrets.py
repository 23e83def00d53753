"""Per-tenant provider secrets: AES-GCM at rest under SECRETS__MASTER_KEY, several active per
tenant and provider (rotation overlap), DB first with the env secret as fallback.

Ingest keeps verifiers (precomputed HMAC key state) in a cache that a LISTEN on
`relayforge_secrets` clears at once on any change, with a short TTL as a backstop.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relayforge.db.queries import Q
from relayforge.kernels import HmacSha256
from relayforge.settings import Settings, master_key

log = logging.getLogger("relayforge.secrets")

CACHE_TTL_SECONDS = 5.0
CACHE_MAX_ENTRIES = 50_000
NOTIFY_CHANNEL = "relayforge_secrets"


@dataclass(frozen=True)
class StoredSecret:
    id: uuid.UUID
    fingerprint: str
    created_at: datetime
    expires_at: datetime | None


class SecretCipher:
    def __init__(self, master_key: bytes) -> None:
        self._aead = AESGCM(master_key)
        self._master_key = master_key

    @staticmethod
    def _aad(tenant_id: uuid.UUID, provider: str) -> bytes:
        # Binds a ciphertext to its row: a copied ciphertext won't decrypt for another tenant.
        return f"{tenant_id}:{provider}".encode()

    def encrypt(self, tenant_id: uuid.UUID, provider: str, secret: str) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        return nonce, self._aead.encrypt(nonce, secret.encode(), self._aad(tenant_id, provider))

    def decrypt(self, tenant_id: uuid.UUID, provider: str, nonce: bytes, ciphertext: bytes) -> bytes:
        return self._aead.decrypt(nonce, ciphertext, self._aad(tenant_id, provider))

    def fingerprint(self, secret: str) -> str:
        # Keyed, so the fingerprint can't be used to test guesses offline.
        return hmac.new(self._master_key, secret.encode(), hashlib.sha256).hexdigest()[:16]


async def rotate(
    conn: asyncpg.Connection,
    cipher: SecretCipher,
    tenant_id: uuid.UUID,
    provider: str,
    secret: str,
    previous_expires_in_seconds: int,
) -> StoredSecret:
    """Make `secret` current; the previous ones stay valid for `previous_expires_in_seconds`."""
    nonce, ciphertext = cipher.encrypt(tenant_id, provider, secret)
    async with conn.transaction():
        await conn.execute(Q["secrets_expire_previous"], tenant_id, provider,
                           float(previous_expires_in_seconds))
        row = await conn.fetchrow(Q["secrets_insert"], uuid.uuid4(), tenant_id, provider, nonce,
                                  ciphertext, cipher.fingerprint(secret))
    return StoredSecret(row["id"], row["fingerprint"], row["created_at"], row["expires_at"])


async def list_secrets(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, provider: str
) -> list[StoredSecret]:
    rows = await conn.fetch(Q["secrets_list"], tenant_id, provider)
    return [StoredSecret(r["id"], r["fingerprint"], r["created_at"], r["expires_at"]) for r in rows]


async def retire(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, provider: str, secret_id: uuid.UUID
) -> bool:
    return await conn.fetchval(Q["secrets_delete"], tenant_id, provider, secret_id) is not None


class SecretStore:
    """Verifiers for (tenant, provider): DB secrets when the tenant has any, else the env one."""

    def __init__(self, pool: asyncpg.Pool, cipher: SecretCipher, env_secrets: dict[str, str]) -> None:
        self._pool = pool
        self._cipher = cipher
        self._env = {p: [HmacSha256(s.encode())] if s else [] for p, s in env_secrets.items()}
        self._cache: dict[tuple[uuid.UUID, str], tuple[float, list[HmacSha256]]] = {}
        self._listener: asyncpg.Connection | None = None

    async def start(self, url: str) -> None:
        try:
            self._listener = await asyncpg.connect(url)
            await self._listener.add_listener(NOTIFY_CHANNEL, self._on_change)
        except (OSError, asyncpg.PostgresError) as exc:  # the TTL still bounds staleness
            log.warning("secret change listener unavailable", extra={"error": str(exc)})

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()

    def _on_change(self, *_: object) -> None:
        self._cache.clear()

    async def verifiers(self, tenant_id: uuid.UUID, provider: str) -> Sequence[HmacSha256]:
        now = time.monotonic()
        hit = self._cache.get((tenant_id, provider))
        if hit is not None and hit[0] > now:
            return hit[1]
        rows = await self._pool.fetch(Q["secrets_for_tenant"], tenant_id, provider)
        ttl = CACHE_TTL_SECONDS
        if rows:
            active = [r for r in rows if r["active"]]
            keys = [
                HmacSha256(self._cipher.decrypt(tenant_id, provider, r["nonce"], r["ciphertext"]))
                for r in active
            ]
            # An entry never outlives the earliest expiry among its secrets.
            soonest = min((r["expires_in"] for r in active if r["expires_in"] is not None),
                          default=None)
            if soonest is not None:
                ttl = max(0.0, min(ttl, soonest))
        else:
            keys = self._env.get(provider, [])
        if len(self._cache) >= CACHE_MAX_ENTRIES:
            self._cache.clear()
        self._cache[(tenant_id, provider)] = (now + ttl, keys)
        return keys




async def set_secret_cli(url: str, settings: Settings, tenant_id: uuid.UUID, provider: str,
                         secret: str, previous_expires_in: int) -> StoredSecret:
    conn = await asyncpg.connect(url)
    try:
        stored = await rotate(conn, SecretCipher(master_key(settings)), tenant_id, provider, secret,
                              previous_expires_in)
        await conn.execute(Q["audit_insert"], None, "cli", "admin", "secret.set",
                           f"{tenant_id}/{provider}", f'{{"secret_id": "{stored.id}"}}')
        return stored
    finally:
        await conn.close()
