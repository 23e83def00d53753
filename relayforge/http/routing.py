"""What the admin API's route table is made of, shared by the modules that declare routes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
from blacksheep import Request

from relayforge.errors import BadRequest
from relayforge.http.instrument import route_value
from relayforge.http.models import Model, NoQuery
from relayforge.models import Page
from relayforge.roles import Role


@dataclass(frozen=True)
class AdminRoute:
    method: str
    path: str
    role: Role
    handler: str  # the AdminEndpoints method ("destinations.create": of its part)
    summary: str
    ok: tuple[int, type | None]  # the success status and what it answers
    query: type[Model] = NoQuery
    body: type[msgspec.Struct] | None = None
    errors: dict[int, tuple[str, list[str]]] = field(default_factory=dict)
    also_ok: dict[int, type] = field(default_factory=dict)  # other success statuses it answers


NOT_FOUND = {404: ("not found", ["not_found"])}
UNKNOWN_PROVIDER = {404: ("unknown provider, or no such row", ["not_found", "unknown_source"])}
VIEWER, OPERATOR, ADMIN = Role.VIEWER, Role.OPERATOR, Role.ADMIN


def path_uuid(request: Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(route_value(request, name))
    except ValueError:
        raise BadRequest(f"{name} must be a UUID") from None


def page(items: list[Any], limit: int) -> Page[Any]:
    return Page(items=items, next_cursor=items[-1].id if len(items) == limit else None)
