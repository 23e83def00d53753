"""webhook_inbox: the evidence of every request that passed its signature check."""

from __future__ import annotations

import base64
import uuid

import orjson

from relayforge.models import InboxCounts, InboxDetail, InboxView, record
from relayforge.stores.base import Q, Store


class InboxStore(Store):
    async def list(self, *, limit: int, tenant_id: uuid.UUID | None = None,
                   source: str | None = None, accepted: bool | None = None,
                   cursor: uuid.UUID | None = None) -> list[InboxView]:
        rows = await self._db.fetch(Q["admin_inbox_list"], tenant_id, source, accepted, cursor,
                                    limit)
        return [record(InboxView, r) for r in rows]

    async def get(self, *, inbox_id: uuid.UUID) -> InboxDetail | None:
        row = await self._db.fetchrow(Q["admin_inbox_get"], inbox_id)
        if row is None:
            return None
        fields = dict(row)
        body = fields.pop("body")
        fields["headers"] = orjson.loads(fields["headers"])
        fields["body_base64"] = base64.b64encode(body).decode() if body is not None else None
        return InboxDetail(**fields)

    async def counts(self, *, tenant_id: uuid.UUID | None = None) -> InboxCounts:
        """Accepted and refused requests of the last 24 hours."""
        row = await self._db.fetchrow(Q["admin_inbox_counts"], tenant_id)
        return InboxCounts(accepted=row["accepted"], rejected=row["rejected"])
