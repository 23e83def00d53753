"""Console sessions: an API key (any role) is exchanged once for a random session token in an
HttpOnly, SameSite=Strict cookie. The database keeps only the token's hash, the key's hash and
the session's CSRF token; every request re-checks the key, so revoking it ends its sessions."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from relayforge.errors import Forbidden, Unauthorized
from relayforge.kernels import sha256_hex
from relayforge.roles import Actor
from relayforge.security.apikeys import ApiKeyAuth
from relayforge.settings import Settings
from relayforge.stores import Stores

COOKIE = "rf_console"
SESSION_SECONDS = 8 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    actor: Actor
    csrf: str


class Sessions:
    def __init__(self, stores: Stores, auth: ApiKeyAuth, settings: Settings) -> None:
        self._sessions = stores.sessions
        self._auth = auth
        self._secure = settings.app_env != "development"

    async def sign_in(self, key: str) -> tuple[str, Session]:
        """A new session for a valid key: (the cookie value, the session)."""
        actor = await self._auth.authenticate(b"Bearer " + key.strip().encode("utf-8", "replace"))
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        await self._sessions.create(token_hash=sha256_hex(token.encode()),
                                    key_hash=sha256_hex(key.strip().encode()), csrf=csrf,
                                    seconds=SESSION_SECONDS)
        return token, Session(actor, csrf)

    async def find(self, token: str | None) -> Session | None:
        if not token or len(token) > 100:
            return None
        row = await self._sessions.get(token_hash=sha256_hex(token.encode()))
        if row is None:
            return None
        try:
            actor = await self._auth.by_hash(row.key_hash)
        except Unauthorized:  # the key was revoked: its sessions end with it
            return None
        return Session(actor, row.csrf)

    async def sign_out(self, token: str | None) -> None:
        if token:
            await self._sessions.delete(token_hash=sha256_hex(token.encode()))

    def cookie(self, token: str, max_age: int = SESSION_SECONDS) -> bytes:
        secure = "; Secure" if self._secure else ""
        return (f"{COOKIE}={token}; Path=/console; Max-Age={max_age}; HttpOnly; "
                f"SameSite=Strict{secure}").encode()


def check_csrf(session: Session, given: str | None) -> None:
    """Every state-changing request carries the session's token (form field or header)."""
    if not given or not hmac.compare_digest(given.encode(), session.csrf.encode()):
        raise Forbidden("missing or wrong CSRF token; reload the page")
