"""Admin API keys: only their SHA-256 is stored; roles viewer < operator < admin.

ADMIN__FALLBACK_API_KEYS_JSON holds bootstrap keys (tests, first start); `relayforge keys
create` makes database keys, which the admin API can then create and revoke.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

import asyncpg

from relayforge.db.queries import Q
from relayforge.errors import Forbidden, Unauthorized
from relayforge.kernels import sha256_hex

ROLES = {"viewer": 1, "operator": 2, "admin": 3}
KEY_PREFIX = "rfk_"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: uuid.UUID | None  # None for a fallback key
    role: str
    source: str  # "db" or "fallback"

    def require(self, role: str) -> None:
        if ROLES[self.role] < ROLES[role]:
            raise Forbidden(f"this action needs the {role} role; the key has {self.role}")


def hash_key(key: str) -> str:
    return sha256_hex(key.encode())


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class ApiKeyAuth:
    def __init__(self, pool: asyncpg.Pool, fallback: tuple[tuple[str, str], ...]) -> None:
        self._pool = pool
        self._fallback = {hash_key(key): role for key, role in fallback}

    async def authenticate(self, authorization: bytes | None) -> Principal:
        if not authorization:
            raise Unauthorized("missing bearer API key")
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token or len(token) > 512:
            raise Unauthorized("expected Authorization: Bearer <key>")
        try:
            digest = hash_key(token.decode("ascii"))
        except UnicodeDecodeError:
            raise Unauthorized("unknown API key") from None
        role = self._fallback.get(digest)
        if role is not None:
            return Principal(None, role, "fallback")
        row = await self._pool.fetchrow(Q["api_key_lookup"], digest)
        if row is None:
            raise Unauthorized("unknown API key")
        return Principal(row["id"], row["role"], "db")


async def create_key(conn: asyncpg.Connection | asyncpg.Pool, role: str, name: str
                     ) -> tuple[asyncpg.Record, str]:
    key = generate_key()
    row = await conn.fetchrow(Q["api_key_insert"], uuid.uuid4(), name, hash_key(key), role)
    return row, key


async def create_key_cli(url: str, role: str, name: str) -> tuple[uuid.UUID, str]:
    conn = await asyncpg.connect(url)
    try:
        row, key = await create_key(conn, role, name)
        await conn.execute(Q["audit_insert"], None, "cli", "admin", "api_key.create",
                           str(row["id"]), f'{{"role": "{role}"}}')
        return row["id"], key
    finally:
        await conn.close()
