"""/admin/*: bearer keys, roles viewer < operator < admin, every mutating call audited.

ROUTES is the one table of method, path, required role and handler; the RBAC tests walk it.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import orjson
from blacksheep import Request, Response

from relayforge.connectors import CONNECTORS
from relayforge.db.queries import Q
from relayforge.errors import BadRequest, Conflict, NotFound, UnknownSource
from relayforge.http.errors import json_response
from relayforge.http.instrument import route_value
from relayforge.jobs import STATES
from relayforge.runtime import Runtime
from relayforge.security import secrets as tenant_secrets
from relayforge.security.apikeys import ROLES, ApiKeyAuth, Principal, create_key
from relayforge.security.secrets import SecretCipher
from relayforge.settings import Settings

MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_BULK = 1000
MAX_ADMIN_BODY = 65536
MAX_SECRET_LENGTH = 1024

AdminHandler = Callable[[Request, Principal], Awaitable[Response]]


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequest(f"{what} must be a UUID") from None


def _query(request: Request, name: str) -> str | None:
    """An optional query parameter; present but empty is an error, not "no filter"."""
    # Parsed here, not with request.query, which drops blank values.
    values = parse_qs(request.url.query.decode("latin-1") if request.url.query else "",
                      keep_blank_values=True).get(name)
    if not values:
        return None
    return _text(values[-1], name, 200)


def _text(value: object, what: str, max_length: int) -> str:
    """A client string bound for a text column: PostgreSQL text can't hold NUL."""
    if not isinstance(value, str) or not value or len(value) > max_length or "\x00" in value:
        raise BadRequest(f"{what} must be a non-empty string of at most {max_length} characters "
                         "without NUL")
    return value


def _query_uuid(request: Request, name: str) -> uuid.UUID | None:
    value = _query(request, name)
    return None if value is None else _uuid(value, name)


def _limit(request: Request) -> int:
    raw = _query(request, "limit")
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest(f"limit must be an integer 1..{MAX_PAGE}")
    return int(raw)


def _provider(name: str) -> str:
    provider = name.lower()
    if provider not in CONNECTORS:
        raise UnknownSource(f"unknown provider {name[:64]!r}")
    return provider


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.read() or b""
    if len(raw) > MAX_ADMIN_BODY:
        raise BadRequest("body too large")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("body must be a JSON object") from None
    if not isinstance(doc, dict):
        raise BadRequest("body must be a JSON object")
    return doc


def _check_keys(doc: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}")


def _row(record: asyncpg.Record) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        out[key] = value
    return out


class AdminEndpoints:
    # The pool and cipher exist once the runtime has started; routes are declared before that.
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._settings: Settings = runtime.settings
        self._auth_cache: ApiKeyAuth | None = None

    @property
    def _pool(self) -> asyncpg.Pool:
        assert self._runtime.pool is not None
        return self._runtime.pool

    @property
    def _cipher(self) -> SecretCipher:
        assert self._runtime.cipher is not None
        return self._runtime.cipher

    @property
    def _auth(self) -> ApiKeyAuth:
        if self._auth_cache is None:
            self._auth_cache = ApiKeyAuth(self._pool, self._settings.admin.fallback_api_keys_json)
        return self._auth_cache

    def routes(self) -> list[tuple[str, str, str, AdminHandler]]:
        return [
            ("GET", "/admin/jobs", "viewer", self.list_jobs),
            ("GET", "/admin/jobs/{job_id}", "viewer", self.get_job),
            ("GET", "/admin/inbox", "viewer", self.list_inbox),
            ("GET", "/admin/inbox/{inbox_id}", "viewer", self.get_inbox),
            ("GET", "/admin/stats", "viewer", self.stats),
            ("POST", "/admin/jobs/{job_id}/reprocess", "operator", self.reprocess),
            ("POST", "/admin/jobs/reprocess", "operator", self.reprocess_bulk),
            ("PUT", "/admin/tenants/{tenant_id}/secrets/{provider}", "admin", self.put_secret),
            ("GET", "/admin/tenants/{tenant_id}/secrets/{provider}", "admin", self.list_secrets),
            ("DELETE", "/admin/tenants/{tenant_id}/secrets/{provider}/{secret_id}", "admin",
             self.delete_secret),
            ("POST", "/admin/api-keys", "admin", self.create_api_key),
            ("GET", "/admin/api-keys", "admin", self.list_api_keys),
            ("DELETE", "/admin/api-keys/{key_id}", "admin", self.revoke_api_key),
        ]

    def guard(self, role: str, handler: AdminHandler) -> Callable[[Request], Awaitable[Response]]:
        assert role in ROLES

        async def guarded(request: Request) -> Response:
            principal = await self._auth.authenticate(request.get_first_header(b"authorization"))
            principal.require(role)
            return await handler(request, principal)

        return guarded

    async def _audit(self, conn: asyncpg.Connection | asyncpg.Pool, who: Principal, action: str,
                     target: str, detail: dict[str, Any] | None = None) -> None:
        await conn.execute(Q["audit_insert"], who.key_id, who.source, who.role, action, target,
                           orjson.dumps(detail or {}).decode())

    # ------------------------------------------------------------------------------ viewer

    async def list_jobs(self, request: Request, who: Principal) -> Response:
        status = _query(request, "status")
        if status is not None and status not in STATES:
            raise BadRequest(f"status must be one of {', '.join(STATES)}")
        source = _query(request, "source")
        limit = _limit(request)
        rows = await self._pool.fetch(
            Q["admin_jobs_list"], status, _query_uuid(request, "tenant_id"),
            source.lower() if source else None, _query_uuid(request, "cursor"), limit,
        )
        return _page(rows, limit)

    async def get_job(self, request: Request, who: Principal) -> Response:
        row = await self._pool.fetchrow(
            Q["admin_job_get"], _uuid(route_value(request, "job_id"), "job id"))
        if row is None:
            raise NotFound("no such job")
        return json_response(200, _row(row))

    async def list_inbox(self, request: Request, who: Principal) -> Response:
        source = _query(request, "source")
        accepted = _query(request, "accepted")
        if accepted not in (None, "true", "false"):
            raise BadRequest("accepted must be true or false")
        limit = _limit(request)
        rows = await self._pool.fetch(
            Q["admin_inbox_list"], _query_uuid(request, "tenant_id"),
            source.lower() if source else None,
            None if accepted is None else accepted == "true",
            _query_uuid(request, "cursor"), limit,
        )
        return _page(rows, limit)

    async def get_inbox(self, request: Request, who: Principal) -> Response:
        row = await self._pool.fetchrow(
            Q["admin_inbox_get"], _uuid(route_value(request, "inbox_id"), "inbox id"))
        if row is None:
            raise NotFound("no such inbox row")
        doc = _row(row)
        doc["headers"] = orjson.loads(row["headers"])
        body = row["body"]
        doc.pop("body")
        doc["body_base64"] = base64.b64encode(body).decode() if body is not None else None
        return json_response(200, doc)

    async def stats(self, request: Request, who: Principal) -> Response:
        tenant_id = _query_uuid(request, "tenant_id")
        counts = {s: 0 for s in STATES}
        for r in await self._pool.fetch(Q["admin_job_counts"], tenant_id):
            counts[r["status"]] = r["n"]
        inbox = await self._pool.fetchrow(Q["admin_inbox_counts"], tenant_id)
        return json_response(200, {
            "jobs": counts,
            "outbox_pending": await self._pool.fetchval(Q["outbox_pending_count"]),
            "inbox_last_24h": {"accepted": inbox["accepted"], "rejected": inbox["rejected"]},
        })

    # ---------------------------------------------------------------------------- operator

    async def reprocess(self, request: Request, who: Principal) -> Response:
        job_id = _uuid(route_value(request, "job_id"), "job id")
        async with self._pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(Q["jobs_reprocess"], None, None, None, 1,
                                       self._settings.worker.max_attempts,
                                       self._settings.amqp.routing_prefix, job_id)
            if done is None:
                state = await conn.fetchrow(Q["job_state"], job_id)
                if state is None:
                    raise NotFound("no such job")
                raise Conflict(f"only dead_lettered jobs can be reprocessed; this one is "
                               f"{state['status']}")
            await self._audit(conn, who, "job.reprocess", str(job_id))
        return json_response(202, {"job_id": str(job_id), "status": "pending"})

    async def reprocess_bulk(self, request: Request, who: Principal) -> Response:
        doc = await _json_body(request)
        _check_keys(doc, {"tenant_id", "source", "event_type", "limit"})
        # A key that is present must be valid: null is not "no filter".
        tenant = _uuid(_text(doc["tenant_id"], "tenant_id", 64), "tenant_id") \
            if "tenant_id" in doc else None
        source = _text(doc["source"], "source", 255).lower() if "source" in doc else None
        event_type = _text(doc["event_type"], "event_type", 255) if "event_type" in doc else None
        limit = doc.get("limit", 100)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_BULK:
            raise BadRequest(f"limit must be an integer 1..{MAX_BULK}")
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                Q["jobs_reprocess"], tenant, source, event_type, limit,
                self._settings.worker.max_attempts, self._settings.amqp.routing_prefix, None,
            )
            ids = [str(r["job_id"]) for r in rows]
            await self._audit(conn, who, "job.reprocess_bulk", "jobs",
                              {"filter": doc, "count": len(ids)})
        return json_response(202, {"reprocessed": len(ids), "job_ids": ids})

    # ------------------------------------------------------------------------------- admin

    async def put_secret(self, request: Request, who: Principal) -> Response:
        tenant_id = _uuid(route_value(request, "tenant_id"), "tenant id")
        provider = _provider(route_value(request, "provider"))
        doc = await _json_body(request)
        _check_keys(doc, {"secret", "previous_expires_in_seconds"})
        secret = doc.get("secret")
        if not isinstance(secret, str) or not secret or len(secret) > MAX_SECRET_LENGTH:
            raise BadRequest(f"secret must be a non-empty string of at most {MAX_SECRET_LENGTH}")
        grace = doc.get("previous_expires_in_seconds", 86400)
        if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 31_536_000:
            raise BadRequest("previous_expires_in_seconds must be an integer 0..31536000")
        async with self._pool.acquire() as conn:
            stored = await tenant_secrets.rotate(conn, self._cipher, tenant_id, provider, secret,
                                                 grace)
            await self._audit(conn, who, "secret.set", f"{tenant_id}/{provider}",
                              {"secret_id": str(stored.id), "previous_expires_in_seconds": grace})
        return json_response(201, _secret_view(stored))

    async def list_secrets(self, request: Request, who: Principal) -> Response:
        tenant_id = _uuid(route_value(request, "tenant_id"), "tenant id")
        provider = _provider(route_value(request, "provider"))
        async with self._pool.acquire() as conn:
            items = await tenant_secrets.list_secrets(conn, tenant_id, provider)
        return json_response(200, {"items": [_secret_view(s) for s in items]})

    async def delete_secret(self, request: Request, who: Principal) -> Response:
        tenant_id = _uuid(route_value(request, "tenant_id"), "tenant id")
        provider = _provider(route_value(request, "provider"))
        secret_id = _uuid(route_value(request, "secret_id"), "secret id")
        async with self._pool.acquire() as conn:
            if not await tenant_secrets.retire(conn, tenant_id, provider, secret_id):
                raise NotFound("no such secret")
            await self._audit(conn, who, "secret.delete", f"{tenant_id}/{provider}",
                              {"secret_id": str(secret_id)})
        return Response(204)

    async def create_api_key(self, request: Request, who: Principal) -> Response:
        doc = await _json_body(request)
        _check_keys(doc, {"role", "name"})
        role = doc.get("role")
        name = doc.get("name", "")
        if not isinstance(role, str) or role not in ROLES:
            raise BadRequest("role must be viewer, operator or admin")
        if name != "":
            _text(name, "name", 200)
        async with self._pool.acquire() as conn:
            row, key = await create_key(conn, role, name)
            await self._audit(conn, who, "api_key.create", str(row["id"]), {"role": role})
        return json_response(201, {**_row(row), "key": key})

    async def list_api_keys(self, request: Request, who: Principal) -> Response:
        rows = await self._pool.fetch(Q["api_key_list"])
        return json_response(200, {"items": [_row(r) for r in rows]})

    async def revoke_api_key(self, request: Request, who: Principal) -> Response:
        key_id = _uuid(route_value(request, "key_id"), "key id")
        async with self._pool.acquire() as conn:
            if await conn.fetchval(Q["api_key_revoke"], key_id) is None:
                raise NotFound("no such active key")
            await self._audit(conn, who, "api_key.revoke", str(key_id))
        return Response(204)


def _page(rows: list[asyncpg.Record], limit: int) -> Response:
    """A page of a list, newest first; a full page carries the cursor of the next."""
    items = [_row(r) for r in rows]
    return json_response(200, {
        "items": items, "next_cursor": items[-1]["id"] if len(items) == limit else None,
    })


def _secret_view(s: tenant_secrets.StoredSecret) -> dict[str, Any]:
    return {
        "id": str(s.id), "fingerprint": s.fingerprint, "created_at": s.created_at.isoformat(),
        "expires_at": s.expires_at.isoformat() if s.expires_at else None,
    }
