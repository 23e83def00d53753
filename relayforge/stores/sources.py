"""Tenant-defined sources: a definition (JSON, checked by relayforge.sources) per tenant and
name."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from relayforge.stores.base import Q, Store


@dataclass(frozen=True, slots=True)
class SourceRow:
    name: str
    definition: str  # JSON text
    created_at: dt.datetime
    updated_at: dt.datetime


class SourceStore(Store):
    async def put(self, *, tenant_id: uuid.UUID, name: str, definition: str) -> bool:
        """Create or replace; True when created."""
        return bool(await self._db.fetchval(Q["tenant_source_put"], tenant_id, name, definition))

    async def get(self, *, tenant_id: uuid.UUID, name: str) -> SourceRow | None:
        row = await self._db.fetchrow(Q["tenant_source_get"], tenant_id, name)
        return None if row is None else SourceRow(**dict(row))

    async def of_tenant(self, *, tenant_id: uuid.UUID) -> list[SourceRow]:
        return [SourceRow(**dict(r)) for r in await self._db.fetch(Q["tenant_sources_list"],
                                                                   tenant_id)]

    async def delete(self, *, tenant_id: uuid.UUID, name: str) -> bool:
        return await self._db.fetchval(Q["tenant_source_delete"], tenant_id, name) is not None
