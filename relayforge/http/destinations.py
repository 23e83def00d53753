"""/admin/tenants/{tenant_id}/destinations, /admin/deliveries and /admin/jobs/{id}/redeliver:
a tenant's HTTP services, the deliveries to them, and replays. Viewers read; admins write
destinations; operators reprocess and redeliver. Every write is audited."""

from __future__ import annotations

import uuid

import asyncpg
import msgspec
import orjson
from blacksheep import Request, Response

from relayforge import actions
from relayforge.actions import AuditAction
from relayforge.destinations.filters import EventFacts, compile_filter
from relayforge.destinations.guard import ForbiddenDestination, check_url
from relayforge.destinations.signing import header_context, new_secret
from relayforge.errors import InvalidDestination, NotFound
from relayforge.http.errors import view_response
from relayforge.http.instrument import query_string
from relayforge.http.models import (
    DEFAULT_TIMEOUT_MS,
    BulkDeliveryReprocess,
    DeliveriesQuery,
    DestinationCreate,
    DestinationPatch,
    OperationalEndpointPut,
    RecoverDeliveries,
    Redeliver,
    RotateSecret,
    given,
    instant,
    parse_query,
    read_model,
)
from relayforge.http.routing import ADMIN, NOT_FOUND, OPERATOR, VIEWER, AdminRoute, page, path_uuid
from relayforge.ids import new_id
from relayforge.models import (
    DeliveryDetail,
    DeliveryView,
    DestinationCreated,
    DestinationRecovered,
    DestinationView,
    Items,
    Page,
    SecretRotated,
    TestEventSent,
    View,
)
from relayforge.roles import Actor
from relayforge.security.secrets import SecretCipher
from relayforge.settings import Settings
from relayforge.stores import Stores
from relayforge.stores.destinations import DestinationFields

INVALID = {400: ("invalid url, filter or headers", ["invalid_destination", "bad_request"])}
BASE = "/admin/tenants/{tenant_id}/destinations"
OPERATIONAL = "/admin/tenants/{tenant_id}/operational-endpoint"
class DeliveriesReprocessed(View):
    reprocessed: int
    delivery_ids: list[uuid.UUID]


class DeliveryReprocessed(View):
    delivery_id: uuid.UUID
    status: str = "pending"


class Redelivered(View):
    job_id: uuid.UUID
    delivery_ids: list[uuid.UUID]


ROUTES = [
    AdminRoute("POST", BASE, ADMIN, "destinations.create",
               "Create a destination; its signing secret (whsec_…) is shown once",
               (201, DestinationCreated), body=DestinationCreate, errors=INVALID),
    AdminRoute("GET", BASE, VIEWER, "destinations.list", "List a tenant's destinations",
               (200, Items[DestinationView])),
    AdminRoute("GET", BASE + "/{destination_id}", VIEWER, "destinations.get",
               "Get a destination (header names only, never secrets)", (200, DestinationView),
               errors=NOT_FOUND),
    AdminRoute("PATCH", BASE + "/{destination_id}", ADMIN, "destinations.update",
               "Change a destination; enabling it again closes its circuit",
               (200, DestinationView), body=DestinationPatch, errors={**NOT_FOUND, **INVALID}),
    AdminRoute("DELETE", BASE + "/{destination_id}", ADMIN, "destinations.delete",
               "Delete a destination and its deliveries", (204, None), errors=NOT_FOUND),
    AdminRoute("POST", BASE + "/{destination_id}/rotate-secret", ADMIN,
               "destinations.rotate_secret",
               "A new signing secret (shown once); the previous ones keep signing until they "
               "expire", (201, SecretRotated), body=RotateSecret, errors=NOT_FOUND),
    AdminRoute("POST", BASE + "/{destination_id}/pause", OPERATOR, "destinations.pause",
               "Pause: its deliveries are created and held, none attempted",
               (200, DestinationView), errors=NOT_FOUND),
    AdminRoute("POST", BASE + "/{destination_id}/resume", OPERATOR, "destinations.resume",
               "Resume: the held deliveries go out, oldest first", (200, DestinationView),
               errors=NOT_FOUND),
    AdminRoute("POST", BASE + "/{destination_id}/recover", OPERATOR, "destinations.recover",
               "Send again every delivery that failed since a time (dead-lettered ones get "
               "WORKER__MAX_ATTEMPTS more attempts)", (202, DestinationRecovered),
               body=RecoverDeliveries,
               errors={**NOT_FOUND, 409: ("the destination is disabled", ["conflict"])}),
    AdminRoute("POST", BASE + "/{destination_id}/test", OPERATOR, "destinations.test",
               "Send a signed relayforge.test event now; the answer holds the attempt",
               (200, TestEventSent), errors=NOT_FOUND),
    AdminRoute("PUT", OPERATIONAL, ADMIN, "destinations.put_operational",
               "Set where the tenant's operational events go (destination.disabled, "
               "destination.circuit_opened, delivery.dead_lettered): 201 with its signing "
               "secret (shown once) when new, 200 when its URL changed",
               (200, DestinationView), body=OperationalEndpointPut, errors=INVALID,
               also_ok={201: DestinationCreated}),
    AdminRoute("GET", OPERATIONAL, VIEWER, "destinations.get_operational",
               "Get the tenant's operational endpoint", (200, DestinationView),
               errors=NOT_FOUND),
    AdminRoute("DELETE", OPERATIONAL, ADMIN, "destinations.delete_operational",
               "Remove the tenant's operational endpoint (no more operational events)",
               (204, None), errors=NOT_FOUND),
    AdminRoute("GET", "/admin/deliveries", VIEWER, "destinations.list_deliveries",
               "List deliveries, newest first", (200, Page[DeliveryView]),
               query=DeliveriesQuery),
    AdminRoute("GET", "/admin/deliveries/{delivery_id}", VIEWER, "destinations.get_delivery",
               "Get a delivery with its attempts log", (200, DeliveryDetail), errors=NOT_FOUND),
    AdminRoute("POST", "/admin/deliveries/{delivery_id}/reprocess", OPERATOR,
               "destinations.reprocess_delivery",
               "Reprocess a dead-lettered delivery (max_attempts rises by WORKER__MAX_ATTEMPTS)",
               (202, DeliveryReprocessed),
               errors={**NOT_FOUND, 409: ("the delivery is not dead_lettered", ["conflict"])}),
    AdminRoute("POST", "/admin/deliveries/reprocess", OPERATOR, "destinations.reprocess_bulk",
               "Reprocess the dead-lettered deliveries that match every given filter",
               (202, DeliveriesReprocessed), body=BulkDeliveryReprocess),
    AdminRoute("POST", "/admin/jobs/{job_id}/redeliver", OPERATOR, "destinations.redeliver",
               "New deliveries of an earlier event (to one destination, or every matching one)",
               (202, Redelivered), body=Redeliver, errors=NOT_FOUND),
]


class DestinationEndpoints:
    def __init__(self, settings: Settings, stores: Stores, cipher: SecretCipher) -> None:
        self._settings = settings
        self._stores = stores
        self._cipher = cipher

    def _url(self, url: str) -> str:
        try:
            return check_url(url, production=self._settings.production,
                             allow_private=self._settings.destinations.allow_private_networks)
        except ForbiddenDestination as exc:
            raise InvalidDestination(f"url: {exc}") from None

    def _sealed(self, tenant_id: uuid.UUID, destination_id: uuid.UUID, secret: str
                ) -> tuple[bytes, bytes]:
        return self._cipher.encrypt(tenant_id, header_context(destination_id), secret)

    async def _view(self, tenant_id: uuid.UUID, destination_id: uuid.UUID) -> DestinationView:
        view = await self._stores.destinations.get(tenant_id=tenant_id,
                                                   destination_id=destination_id)
        if view is None:
            raise NotFound("no such destination")
        return view

    async def create(self, request: Request, actor: Actor) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        body = await read_model(request, DestinationCreate)
        return view_response(201, await self.add(actor, tenant_id, body))

    async def add(self, actor: Actor, tenant_id: uuid.UUID, body: DestinationCreate
                  ) -> DestinationCreated:
        """A new destination, checked as the API checks it (the console's form too)."""
        destination_id = new_id()
        fields = DestinationFields(
            name=given(body.name), url=self._url(body.url), enabled=body.enabled,
            filter_json=actions.stored_filter(body.filter),
            header_names=actions.check_headers(body.headers),
            headers_sealed=self._sealed(tenant_id, destination_id,
                                        orjson.dumps(body.headers).decode())
            if body.headers else None,
            payload=body.payload, timeout_ms=body.timeout_ms,
            rate_limit_per_second=body.rate_limit_per_second,
            max_concurrency=body.max_concurrency)
        return await self._created(tenant_id, destination_id, fields, actor,
                                   AuditAction.DESTINATION_CREATE)

    async def _created(self, tenant_id: uuid.UUID, destination_id: uuid.UUID,
                       fields: DestinationFields, actor: Actor, action: AuditAction,
                       kind: str = "events") -> DestinationCreated:
        """Insert it with a new signing secret, audited; the secret is shown this once."""
        secret = new_secret()
        nonce, ciphertext = self._sealed(tenant_id, destination_id, secret)
        async with self._stores.transaction() as tx:
            await tx.destinations.insert(destination_id=destination_id, tenant_id=tenant_id,
                                         fields=fields, kind=kind)
            await tx.destinations.add_secret(
                secret_id=new_id(), destination_id=destination_id, nonce=nonce,
                ciphertext=ciphertext, fingerprint=self._cipher.fingerprint(secret))
            await tx.audit.write(actor=actor, action=action, target=str(destination_id),
                                 detail={"tenant_id": str(tenant_id), "url": fields.url})
            view = await tx.destinations.get(tenant_id=tenant_id, destination_id=destination_id)
        assert view is not None
        return DestinationCreated(**msgspec.structs.asdict(view), signing_secret=secret)

    async def put_operational(self, request: Request, actor: Actor) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        url = self._url((await read_model(request, OperationalEndpointPut)).url)
        existing = await self._stores.destinations.operational_endpoint(tenant_id=tenant_id)
        if existing is None:
            try:
                return view_response(201, await self._created(
                    tenant_id, new_id(), DestinationFields(
                        name="operational events", url=url, payload="event",
                        timeout_ms=DEFAULT_TIMEOUT_MS),
                    actor, AuditAction.OPERATIONAL_ENDPOINT_SET, kind="operational"))
            except asyncpg.UniqueViolationError:  # another PUT made it first: change its URL
                existing = await self._stores.destinations.operational_endpoint(
                    tenant_id=tenant_id)
                assert existing is not None
        async with self._stores.transaction() as tx:
            await tx.destinations.update(tenant_id=tenant_id, destination_id=existing,
                                         fields=DestinationFields(url=url))
            await tx.audit.write(actor=actor, action=AuditAction.OPERATIONAL_ENDPOINT_SET,
                                 target=str(existing),
                                 detail={"tenant_id": str(tenant_id), "url": url})
        return view_response(200, await self._view(tenant_id, existing))

    async def get_operational(self, request: Request, actor: Actor) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        existing = await self._stores.destinations.operational_endpoint(tenant_id=tenant_id)
        if existing is None:
            raise NotFound("the tenant has no operational endpoint")
        return view_response(200, await self._view(tenant_id, existing))

    async def delete_operational(self, request: Request, actor: Actor) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        async with self._stores.transaction() as tx:
            existing = await tx.destinations.operational_endpoint(tenant_id=tenant_id)
            if existing is None or not await tx.destinations.delete(
                    tenant_id=tenant_id, destination_id=existing):
                raise NotFound("the tenant has no operational endpoint")
            await tx.audit.write(actor=actor, action=AuditAction.OPERATIONAL_ENDPOINT_DELETE,
                                 target=str(existing), detail={"tenant_id": str(tenant_id)})
        return Response(204)

    async def list(self, request: Request, actor: Actor) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        return view_response(200, Items(
            items=await self._stores.destinations.of_tenant(tenant_id=tenant_id)))

    async def get(self, request: Request, actor: Actor) -> Response:
        return view_response(200, await self._view(path_uuid(request, "tenant_id"),
                                                    path_uuid(request, "destination_id")))

    async def update(self, request: Request, actor: Actor) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        destination_id = path_uuid(request, "destination_id")
        body = await read_model(request, DestinationPatch)
        return view_response(200, await self.change(actor, tenant_id, destination_id, body))

    async def change(self, actor: Actor, tenant_id: uuid.UUID, destination_id: uuid.UUID,
                     body: DestinationPatch) -> DestinationView:
        """A destination changed, checked as the API checks it (the console's form too)."""
        headers = given(body.headers)
        spec = given(body.filter)
        cleared = tuple(name for name in ("name", "rate_limit_per_second", "max_concurrency")
                        if getattr(body, name) is None)
        url = given(body.url)
        fields = DestinationFields(
            name=given(body.name), url=self._url(url) if url is not None else None,
            enabled=given(body.enabled),
            filter_json=actions.stored_filter(spec) if spec is not None else None,
            header_names=actions.check_headers(headers) if headers is not None else None,
            headers_sealed=self._sealed(tenant_id, destination_id,
                                        orjson.dumps(headers).decode())
            if headers is not None else None,
            payload=given(body.payload), timeout_ms=given(body.timeout_ms),
            rate_limit_per_second=given(body.rate_limit_per_second),
            max_concurrency=given(body.max_concurrency), cleared=cleared)
        async with self._stores.transaction() as tx:
            if not await tx.destinations.update(tenant_id=tenant_id,
                                                destination_id=destination_id, fields=fields):
                raise NotFound("no such destination")
            changed = sorted(k for k, v in msgspec.structs.asdict(body).items()
                             if v is not msgspec.UNSET)
            await tx.audit.write(actor=actor, action=AuditAction.DESTINATION_UPDATE,
                                 target=str(destination_id),
                                 detail={"tenant_id": str(tenant_id), "fields": changed})
        return await self._view(tenant_id, destination_id)

    async def delete(self, request: Request, actor: Actor) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        destination_id = path_uuid(request, "destination_id")
        async with self._stores.transaction() as tx:
            if not await tx.destinations.delete(tenant_id=tenant_id,
                                                destination_id=destination_id):
                raise NotFound("no such destination")
            await tx.audit.write(actor=actor, action=AuditAction.DESTINATION_DELETE,
                                 target=str(destination_id), detail={"tenant_id": str(tenant_id)})
        return Response(204)

    async def rotate_secret(self, request: Request, actor: Actor) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        destination_id = path_uuid(request, "destination_id")
        body = await read_model(request, RotateSecret)
        return view_response(201, await actions.rotate_destination_secret(
            self._stores, self._cipher, actor, tenant_id, destination_id,
            body.previous_expires_in_seconds))

    async def pause(self, request: Request, actor: Actor) -> Response:
        return await self._pause(request, actor, paused=True)

    async def resume(self, request: Request, actor: Actor) -> Response:
        return await self._pause(request, actor, paused=False)

    async def _pause(self, request: Request, actor: Actor, paused: bool) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        destination_id = path_uuid(request, "destination_id")
        await actions.pause_destination(self._stores, actor, tenant_id, destination_id, paused)
        return view_response(200, await self._view(tenant_id, destination_id))

    async def recover(self, request: Request, actor: Actor) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        destination_id = path_uuid(request, "destination_id")
        body = await read_model(request, RecoverDeliveries)
        since = instant(body.since, "since")
        assert since is not None
        return view_response(202, await actions.recover_destination(
            self._stores, self._settings, actor, tenant_id, destination_id, since))

    async def test(self, request: Request, actor: Actor) -> Response:
        return view_response(200, await actions.send_test_event(
            self._stores, self._settings, self._cipher, actor, path_uuid(request, "tenant_id"),
            path_uuid(request, "destination_id")))

    async def list_deliveries(self, request: Request, actor: Actor) -> Response:
        q = parse_query(query_string(request), DeliveriesQuery)
        items = await self._stores.deliveries.search(
            limit=q.limit, tenant_id=given(q.tenant_id), destination_id=given(q.destination_id),
            job_id=given(q.job_id), status=given(q.status), cursor=given(q.cursor))
        return view_response(200, page(items, q.limit))

    async def get_delivery(self, request: Request, actor: Actor) -> Response:
        detail = await self._stores.deliveries.detail(
            delivery_id=path_uuid(request, "delivery_id"))
        if detail is None:
            raise NotFound("no such delivery")
        return view_response(200, detail)

    async def reprocess_delivery(self, request: Request, actor: Actor) -> Response:
        delivery_id = path_uuid(request, "delivery_id")
        await actions.reprocess_delivery(self._stores, self._settings, actor, delivery_id)
        return view_response(202, DeliveryReprocessed(delivery_id=delivery_id))

    async def reprocess_bulk(self, request: Request, actor: Actor) -> Response:
        body = await read_model(request, BulkDeliveryReprocess)
        ids = await actions.reprocess_deliveries(
            self._stores, self._settings, actor, tenant_id=given(body.tenant_id),
            destination_id=given(body.destination_id), limit=body.limit)
        return view_response(202, DeliveriesReprocessed(reprocessed=len(ids), delivery_ids=ids))

    async def redeliver(self, request: Request, actor: Actor) -> Response:
        job_id = path_uuid(request, "job_id")
        body = await read_model(request, Redeliver)
        job = await self._stores.jobs.get(job_id=job_id)
        if job is None:
            raise NotFound("no such job")
        wanted = given(body.destination_id)
        destinations = await self._stores.destinations.of_tenant(tenant_id=job.tenant_id)
        if wanted is not None:
            targets = [d.id for d in destinations if d.id == wanted]
            if not targets:
                raise NotFound("no such destination for the job's tenant")
        else:
            event = await self._stores.jobs.event(job_id=job_id)
            facts = EventFacts(job.source, event.event_type, event.data)
            targets = [d.id for d in destinations
                       if d.enabled and compile_filter(d.filter).matches(facts)]
        async with self._stores.transaction() as tx:
            ids = await tx.deliveries.redeliver(
                job_id=job_id, deliveries=[(new_id(), d) for d in targets],
                max_attempts=self._settings.worker.max_attempts)
            await tx.audit.write(actor=actor, action=AuditAction.JOB_REDELIVER, target=str(job_id),
                                 detail={"destination_ids": [str(d) for d in targets]})
        return view_response(202, Redelivered(job_id=job_id, delivery_ids=ids))
