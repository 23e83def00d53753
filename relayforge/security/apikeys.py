"""Admin API keys: only their SHA-256 is stored; roles viewer < operator < admin.

ADMIN__FALLBACK_API_KEYS_JSON holds bootstrap keys (tests, first start); `relayforge keys
create` makes database keys, which the admin API can then create and revoke.
"""

from __future__ import annotations

import secrets

from relayforge.errors import Unauthorized
from relayforge.kernels import sha256_hex
from relayforge.roles import Actor, Role
from relayforge.stores import Stores

KEY_PREFIX = "rfk_"
MAX_KEY_LENGTH = 512


def hash_key(key: str) -> str:
    return sha256_hex(key.encode())


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class ApiKeyAuth:
    def __init__(self, stores: Stores, fallback: tuple[tuple[str, str], ...]) -> None:
        self._keys = stores.api_keys
        self._fallback = {hash_key(key): Role(role) for key, role in fallback}

    async def authenticate(self, authorization: bytes | None) -> Actor:
        if not authorization:
            raise Unauthorized("missing bearer API key")
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token or len(token) > MAX_KEY_LENGTH:
            raise Unauthorized("expected Authorization: Bearer <key>")
        try:
            digest = hash_key(token.decode("ascii"))
        except UnicodeDecodeError:
            raise Unauthorized("unknown API key") from None
        return await self.by_hash(digest)

    async def by_hash(self, digest: str) -> Actor:
        """The actor of a key known by its hash (a console session keeps only that)."""
        role = self._fallback.get(digest)
        if role is not None:
            return Actor(None, role, "fallback")
        match = await self._keys.lookup(key_hash=digest)
        if match is None:
            raise Unauthorized("unknown API key")
        return Actor(match.id, match.role, "db")
