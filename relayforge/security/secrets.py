"""Per-tenant provider secrets: AES-GCM at rest under SECRETS__MASTER_KEY, several active per
tenant and provider (rotation overlap), DB first with the env secret as fallback.

Ingest keeps verifiers (precomputed HMAC key state) in a cache that a LISTEN on
`relayforge_secrets` clears at once on any change, with a short TTL as a backstop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relayforge.db.listener import Listener
from relayforge.ids import new_id
from relayforge.kernels import TOKEN_ALGORITHM, Hmac, HmacSha256, token_key
from relayforge.models import SecretView
from relayforge.stores import Stores

log = logging.getLogger(__name__)

CACHE_TTL_SECONDS = 5.0
CACHE_MAX_ENTRIES = 50_000
MANAGED_SET_MAX = 100_000
NOTIFY_CHANNEL = "relayforge_secrets"


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

    def decrypt(self, tenant_id: uuid.UUID, provider: str, nonce: bytes,
                ciphertext: bytes) -> bytes:
        return self._aead.decrypt(nonce, ciphertext, self._aad(tenant_id, provider))

    def fingerprint(self, secret: str) -> str:
        # Keyed, so the fingerprint can't be used to test guesses offline.
        return hmac.new(self._master_key, secret.encode(), hashlib.sha256).hexdigest()[:16]


class WrongMasterKey(RuntimeError):
    """Stored secrets don't decrypt with the configured SECRETS__MASTER_KEY."""


async def check_master_key(stores: Stores, cipher: SecretCipher, sample: int = 20) -> None:
    """The newest stored secrets must decrypt: a server started with another master key would
    otherwise report ready and refuse every request of every tenant that has secrets."""
    for tenant_id, provider, nonce, ciphertext in await stores.secrets.newest(limit=sample):
        try:
            cipher.decrypt(tenant_id, provider, nonce, ciphertext)
        except InvalidTag:
            raise WrongMasterKey(
                "SECRETS__MASTER_KEY: stored tenant secrets don't decrypt with this key; start "
                "with the key they were stored with") from None


async def store_secret(tx: Stores, cipher: SecretCipher, tenant_id: uuid.UUID, provider: str,
                       secret: str, expires_in_seconds: float | None = None) -> SecretView:
    """Store a tenant's secret for a source, encrypted (the caller audits)."""
    nonce, ciphertext = cipher.encrypt(tenant_id, provider, secret)
    return await tx.secrets.insert(secret_id=new_id(), tenant_id=tenant_id, provider=provider,
                                   nonce=nonce, ciphertext=ciphertext,
                                   fingerprint=cipher.fingerprint(secret),
                                   expires_in_seconds=expires_in_seconds)


class SecretVerifiers:
    """Verifiers for (tenant, provider): DB secrets when the tenant is managed (has ever had
    one), else the env one.

    Which tenants have DB secrets is one set, loaded in one query and cached like the secrets:
    a tenant without any (most of them, in many setups) costs no query at all.
    """

    def __init__(self, stores: Stores, cipher: SecretCipher, env_secrets: dict[str, str],
                 signing_key: Callable[[str, str], bytes] = lambda _, secret: secret.encode()
                 ) -> None:
        """`signing_key(provider, secret)`: the HMAC key a secret stands for (the base64 part
        of a `whsec_…` secret for Standard Webhooks; its bytes for most schemes)."""
        self._secrets = stores.secrets
        self._cipher = cipher
        self._signing_key = signing_key
        self._env = {p: [HmacSha256(signing_key(p, s))] if s else []
                     for p, s in env_secrets.items()}
        self._cache: dict[tuple[uuid.UUID, str, str | None], tuple[float, list[Any]]] = {}
        self._managed: tuple[float, set[tuple[uuid.UUID, str]] | None] = (0.0, None)
        self._managed_lock = asyncio.Lock()

    def watch(self, listener: Listener) -> None:
        """Clear the cache the moment any process changes a secret (the TTL still bounds
        staleness while the listener is away, and it clears the cache when it is back)."""
        listener.on(NOTIFY_CHANNEL, self._on_change)

    def _on_change(self) -> None:
        self._cache.clear()
        self._managed = (0.0, None)

    async def _has_db_secrets(self, key: tuple[uuid.UUID, str]) -> bool | None:
        """Whether the tenant has DB secrets for the provider; None when the set is too large
        to hold (then every tenant is looked up on its own)."""
        async with self._managed_lock:  # one reload at a time, the others wait for it
            expires, managed = self._managed
            if expires <= time.monotonic():
                managed = await self._secrets.managed(limit=MANAGED_SET_MAX + 1)
                if len(managed) > MANAGED_SET_MAX:
                    managed = None
                self._managed = (time.monotonic() + CACHE_TTL_SECONDS, managed)
        return None if managed is None else key in managed

    def known(self, tenant_id: uuid.UUID, provider: str,
              algorithm: str | None = None) -> Sequence[Any] | None:
        """The keys when they are known without a query or a lock (cached, or the tenant has
        no DB secrets and the managed set is fresh): the per-request path. None: await
        verifiers()."""
        now = time.monotonic()
        hit = self._cache.get((tenant_id, provider, algorithm))
        if hit is not None and hit[0] > now:
            return hit[1]
        if algorithm is None:
            expires, managed = self._managed
            if expires > now and managed is not None and (tenant_id, provider) not in managed:
                return self._env.get(provider, [])
        return None

    async def verifiers(self, tenant_id: uuid.UUID, provider: str,
                        algorithm: str | None = None) -> Sequence[Any]:
        """HmacSha256 keys; with `algorithm` (a tenant-defined source's), generic Hmac keys."""
        keys = self.known(tenant_id, provider, algorithm)
        if keys is not None:
            return keys
        now = time.monotonic()
        if algorithm is None and await self._has_db_secrets((tenant_id, provider)) is False:
            return self._env.get(provider, [])
        managed, rows = await self._secrets.for_tenant(tenant_id=tenant_id, provider=provider)
        ttl = CACHE_TTL_SECONDS

        def make(key: bytes) -> Any:
            if algorithm == TOKEN_ALGORITHM:
                return HmacSha256(token_key(key))
            return HmacSha256(key) if algorithm is None else Hmac(algorithm, key)

        if managed:  # DB secrets only, even none: never the shared env secret again
            keys = [make(self._signing_key(provider, self._cipher.decrypt(
                        tenant_id, provider, r.nonce, r.ciphertext).decode()))
                    for r in rows]
            # An entry never outlives the earliest expiry among its secrets.
            soonest = min((r.expires_in for r in rows if r.expires_in is not None), default=None)
            if soonest is not None:
                ttl = max(0.0, min(ttl, soonest))
        else:
            keys = self._env.get(provider, []) if algorithm is None else []
        if len(self._cache) >= CACHE_MAX_ENTRIES:
            self._cache.clear()
        self._cache[(tenant_id, provider, algorithm)] = (now + ttl, keys)
        return keys
