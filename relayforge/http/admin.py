"""/admin/*: bearer keys, roles viewer < operator < admin, every change audited.

ROUTES is the one table of the admin API: method, path, role, handler, and the types of its
query, body and answers. The app registers it, the RBAC tests walk it, and the OpenAPI
document is generated from it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from blacksheep import Request, Response

from relayforge import actions
from relayforge.errors import NotFound, Unauthorized
from relayforge.http import destinations, sources
from relayforge.http.destinations import DestinationEndpoints
from relayforge.http.errors import view_response
from relayforge.http.instrument import client_address, query_string, route_value
from relayforge.http.models import (
    ApiKeyCreate,
    BulkReprocess,
    InboxQuery,
    JobsQuery,
    NoQuery,
    SecretPut,
    StatsQuery,
    given,
    instant,
    lower,
    parse_query,
    read_model,
)
from relayforge.http.routing import (
    ADMIN,
    NOT_FOUND,
    OPERATOR,
    UNKNOWN_PROVIDER,
    VIEWER,
    AdminRoute,
    page,
    path_uuid,
)
from relayforge.http.sources import SourceEndpoints
from relayforge.models import (
    ApiKeyCreated,
    ApiKeyView,
    InboxDetail,
    InboxView,
    Items,
    JobView,
    Page,
    SecretView,
    Stats,
    View,
)
from relayforge.roles import Actor
from relayforge.security import apikeys
from relayforge.security.limits import UnverifiedBudget
from relayforge.security.secrets import SecretCipher
from relayforge.settings import Settings
from relayforge.stores import Stores


class Reprocessed(View):
    job_id: uuid.UUID
    status: str = "pending"


class BulkReprocessed(View):
    reprocessed: int
    job_ids: list[uuid.UUID]


ROUTES = [
    AdminRoute("GET", "/admin/jobs", VIEWER, "list_jobs", "List jobs, newest first",
               (200, Page[JobView]), query=JobsQuery),
    AdminRoute("GET", "/admin/jobs/{job_id}", VIEWER, "get_job", "Get a job", (200, JobView),
               errors=NOT_FOUND),
    AdminRoute("GET", "/admin/inbox", VIEWER, "list_inbox", "List inbox rows, newest first",
               (200, Page[InboxView]), query=InboxQuery),
    AdminRoute("GET", "/admin/inbox/{inbox_id}", VIEWER, "get_inbox",
               "Get an inbox row with its evidence headers and body", (200, InboxDetail),
               errors=NOT_FOUND),
    AdminRoute("GET", "/admin/stats", VIEWER, "stats",
               "Job counts by status, outbox backlog, inbox of the last 24 h", (200, Stats),
               query=StatsQuery),
    AdminRoute("POST", "/admin/jobs/{job_id}/reprocess", OPERATOR, "reprocess",
               "Reprocess a dead-lettered job (max_attempts rises by WORKER__MAX_ATTEMPTS)",
               (202, Reprocessed),
               errors={**NOT_FOUND, 409: ("the job is not dead_lettered", ["conflict"])}),
    AdminRoute("POST", "/admin/jobs/reprocess", OPERATOR, "reprocess_bulk",
               "Reprocess the dead-lettered jobs that match every given filter",
               (202, BulkReprocessed), body=BulkReprocess),
    AdminRoute("PUT", "/admin/tenants/{tenant_id}/secrets/{provider}", ADMIN, "put_secret",
               "Make a secret current; the previous ones expire later (rotation)",
               (201, SecretView), body=SecretPut, errors=UNKNOWN_PROVIDER),
    AdminRoute("GET", "/admin/tenants/{tenant_id}/secrets/{provider}", ADMIN, "list_secrets",
               "List a tenant's active secrets (never their values)", (200, Items[SecretView]),
               errors=UNKNOWN_PROVIDER),
    AdminRoute("DELETE", "/admin/tenants/{tenant_id}/secrets/{provider}/{secret_id}", ADMIN,
               "delete_secret", "Retire a secret at once", (204, None), errors=UNKNOWN_PROVIDER),
    AdminRoute("POST", "/admin/api-keys", ADMIN, "create_api_key", "Create an API key (shown once)",
               (201, ApiKeyCreated), body=ApiKeyCreate),
    AdminRoute("GET", "/admin/api-keys", ADMIN, "list_api_keys", "List API keys (never the keys)",
               (200, Items[ApiKeyView])),
    AdminRoute("DELETE", "/admin/api-keys/{key_id}", ADMIN, "revoke_api_key", "Revoke an API key",
               (204, None), errors=NOT_FOUND),
]

ROUTES += destinations.ROUTES + sources.ROUTES

AdminHandler = Callable[[Request, Actor], Awaitable[Response]]


class AdminEndpoints:
    def __init__(self, settings: Settings, stores: Stores, cipher: SecretCipher,
                 unverified: UnverifiedBudget) -> None:
        self._settings = settings
        self._unverified = unverified
        self._stores = stores
        self._cipher = cipher
        self.auth = self._auth = apikeys.ApiKeyAuth(stores,
                                                    settings.admin.fallback_api_keys_json)
        self.destinations = DestinationEndpoints(settings, stores, cipher)
        self.sources = SourceEndpoints(stores)

    async def _provider(self, request: Request, tenant_id: uuid.UUID) -> str:
        return await actions.known_source(self._stores, tenant_id,
                                          route_value(request, "provider"))

    def handler(self, route: AdminRoute) -> Callable[[Request], Awaitable[Response]]:
        """The route's handler behind authentication, its role and its query model."""
        part, _, name = route.handler.rpartition(".")
        handle: AdminHandler = getattr(getattr(self, part) if part else self, name)

        async def guarded(request: Request) -> Response:
            try:
                actor = await self._auth.authenticate(request.get_first_header(b"authorization"))
            except Unauthorized as exc:  # guessing keys costs the address its budget
                raise self._unverified.refusal(client_address(request), exc) from None
            actor.require(route.role)
            if route.query is NoQuery:
                parse_query(query_string(request), NoQuery)
            return await handle(request, actor)

        return guarded

    # ------------------------------------------------------------------------------ viewer

    async def list_jobs(self, request: Request, actor: Actor) -> Response:
        q = parse_query(query_string(request), JobsQuery)
        jobs = await self._stores.jobs.list(
            limit=q.limit, status=given(q.status), tenant_id=given(q.tenant_id),
            source=lower(given(q.source)), event_type=given(q.event_type),
            cursor=given(q.cursor), provider_event_id=given(q.provider_event_id),
            since=instant(given(q.since), "since"), until=instant(given(q.until), "until"))
        return view_response(200, page(jobs, q.limit))

    async def get_job(self, request: Request, actor: Actor) -> Response:
        job = await self._stores.jobs.get(job_id=path_uuid(request, "job_id"))
        if job is None:
            raise NotFound("no such job")
        return view_response(200, job)

    async def list_inbox(self, request: Request, actor: Actor) -> Response:
        q = parse_query(query_string(request), InboxQuery)
        rows = await self._stores.inbox.list(
            limit=q.limit, tenant_id=given(q.tenant_id), source=lower(given(q.source)),
            accepted=given(q.accepted), cursor=given(q.cursor))
        return view_response(200, page(rows, q.limit))

    async def get_inbox(self, request: Request, actor: Actor) -> Response:
        row = await self._stores.inbox.get(inbox_id=path_uuid(request, "inbox_id"))
        if row is None:
            raise NotFound("no such inbox row")
        return view_response(200, row)

    async def stats(self, request: Request, actor: Actor) -> Response:
        tenant_id = given(parse_query(query_string(request), StatsQuery).tenant_id)
        return view_response(200, Stats(
            jobs=await self._stores.jobs.counts(tenant_id=tenant_id),
            outbox_pending=await self._stores.outbox.pending_count(),
            inbox_last_24h=await self._stores.inbox.counts(tenant_id=tenant_id)))

    # ---------------------------------------------------------------------------- operator

    async def reprocess(self, request: Request, actor: Actor) -> Response:
        job_id = path_uuid(request, "job_id")
        await actions.reprocess_job(self._stores, self._settings, actor, job_id)
        return view_response(202, Reprocessed(job_id=job_id))

    async def reprocess_bulk(self, request: Request, actor: Actor) -> Response:
        body = await read_model(request, BulkReprocess)
        ids = await actions.reprocess_jobs(self._stores, self._settings, actor,
                                           tenant_id=given(body.tenant_id),
                                           source=lower(given(body.source)),
                                           event_type=given(body.event_type), limit=body.limit)
        return view_response(202, BulkReprocessed(reprocessed=len(ids), job_ids=ids))

    # ------------------------------------------------------------------------------- admin

    async def put_secret(self, request: Request, actor: Actor) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        provider = await self._provider(request, tenant_id)
        body = await read_model(request, SecretPut)
        return view_response(201, await actions.set_secret(
            self._stores, self._cipher, self._settings, actor, tenant_id=tenant_id,
            provider=provider, secret=body.secret,
            previous_expires_in_seconds=body.previous_expires_in_seconds))

    async def list_secrets(self, request: Request, actor: Actor) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        provider = await self._provider(request, tenant_id)
        items = await self._stores.secrets.list(tenant_id=tenant_id, provider=provider)
        return view_response(200, Items(items=items))

    async def delete_secret(self, request: Request, actor: Actor) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        provider = await self._provider(request, tenant_id)
        await actions.retire_secret(self._stores, actor, tenant_id=tenant_id, provider=provider,
                                    secret_id=path_uuid(request, "secret_id"))
        return Response(204)

    async def create_api_key(self, request: Request, actor: Actor) -> Response:
        body = await read_model(request, ApiKeyCreate)
        return view_response(201, await actions.create_key(self._stores, actor, body.role,
                                                           body.name))

    async def list_api_keys(self, request: Request, actor: Actor) -> Response:
        return view_response(200, Items(items=await self._stores.api_keys.list()))

    async def revoke_api_key(self, request: Request, actor: Actor) -> Response:
        await actions.revoke_key(self._stores, actor, path_uuid(request, "key_id"))
        return Response(204)

