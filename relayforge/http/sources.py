"""/admin/tenants/{tenant_id}/sources/{name}: a tenant's own webhook sources, defined without
code (see relayforge/connectors/tenant.py). Admin only; every write audited. The built-in names
are reserved (409); every ingest process sees a change at once (NOTIFY)."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec
from blacksheep import Request, Response

from relayforge.actions import AuditAction
from relayforge.connectors import CONNECTORS
from relayforge.connectors.tenant import (
    InvalidDefinition,
    SourceDefinition,
    check_definition,
    valid_name,
)
from relayforge.errors import BadRequest, Conflict, NotFound
from relayforge.http.errors import view_response
from relayforge.http.instrument import route_value
from relayforge.http.models import read_model
from relayforge.http.routing import ADMIN, NOT_FOUND, AdminRoute, path_uuid
from relayforge.models import Items, View
from relayforge.roles import Actor
from relayforge.stores import Stores
from relayforge.stores.sources import SourceRow

BASE = "/admin/tenants/{tenant_id}/sources"


class SourceView(View):
    name: str
    definition: SourceDefinition
    webhook_url_path: str  # where the provider sends: /tenants/{tenant_id}/webhooks/{name}
    created_at: datetime
    updated_at: datetime


ROUTES = [
    AdminRoute("PUT", BASE + "/{name}", ADMIN, "sources.put",
               "Define (or replace) a tenant's own webhook source", (200, SourceView),
               body=SourceDefinition,
               errors={400: ("invalid definition or name", ["bad_request"]),
                       409: ("a built-in source's name", ["conflict"])}),
    AdminRoute("GET", BASE, ADMIN, "sources.list", "List a tenant's own sources",
               (200, Items[SourceView])),
    AdminRoute("GET", BASE + "/{name}", ADMIN, "sources.get", "Get a tenant's own source",
               (200, SourceView), errors=NOT_FOUND),
    AdminRoute("DELETE", BASE + "/{name}", ADMIN, "sources.delete",
               "Delete a tenant's own source (its secrets stay until retired)", (204, None),
               errors=NOT_FOUND),
]


def source_name(request: Request) -> str:
    name = route_value(request, "name").lower()
    if not valid_name(name):
        raise BadRequest("name: 1 to 64 of a-z, 0-9, - and _, starting with a letter or digit")
    return name


def _view(tenant_id: uuid.UUID, row: SourceRow) -> SourceView:
    return SourceView(name=row.name,
                      definition=msgspec.json.decode(row.definition, type=SourceDefinition),
                      webhook_url_path=f"/tenants/{tenant_id}/webhooks/{row.name}",
                      created_at=row.created_at, updated_at=row.updated_at)


class SourceEndpoints:
    def __init__(self, stores: Stores) -> None:
        self._stores = stores

    async def put(self, request: Request, actor: Actor) -> Response:
        tenant_id, name = path_uuid(request, "tenant_id"), source_name(request)
        if name in CONNECTORS:
            raise Conflict(f"{name} is a built-in source; choose another name")
        try:
            definition = check_definition(await read_model(request, SourceDefinition))
        except InvalidDefinition as exc:
            raise BadRequest(str(exc)) from None
        async with self._stores.transaction() as tx:
            created = await tx.sources.put(tenant_id=tenant_id, name=name,
                                           definition=msgspec.json.encode(definition).decode())
            await tx.audit.write(actor=actor, action=AuditAction.SOURCE_PUT, target=name,
                                 detail={"tenant_id": str(tenant_id), "created": created})
            row = await tx.sources.get(tenant_id=tenant_id, name=name)
        assert row is not None
        return view_response(200, _view(tenant_id, row))

    async def list(self, request: Request, actor: Actor) -> Response:
        tenant_id = path_uuid(request, "tenant_id")
        rows = await self._stores.sources.of_tenant(tenant_id=tenant_id)
        return view_response(200, Items(items=[_view(tenant_id, r) for r in rows]))

    async def get(self, request: Request, actor: Actor) -> Response:
        tenant_id, name = path_uuid(request, "tenant_id"), source_name(request)
        row = await self._stores.sources.get(tenant_id=tenant_id, name=name)
        if row is None:
            raise NotFound("no such source")
        return view_response(200, _view(tenant_id, row))

    async def delete(self, request: Request, actor: Actor) -> Response:
        tenant_id, name = path_uuid(request, "tenant_id"), source_name(request)
        async with self._stores.transaction() as tx:
            if not await tx.sources.delete(tenant_id=tenant_id, name=name):
                raise NotFound("no such source")
            await tx.audit.write(actor=actor, action=AuditAction.SOURCE_DELETE, target=name,
                                 detail={"tenant_id": str(tenant_id)})
        return Response(204)
