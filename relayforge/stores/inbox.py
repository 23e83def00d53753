"""webhook_inbox: the evidence of every request that passed its signature check."""

from __future__ import annotations

import base64
import builtins
import datetime as dt
import uuid
from dataclasses import dataclass

import orjson

from relayforge.models import InboxCounts, InboxDetail, InboxView, record
from relayforge.stores.base import Q, Store


@dataclass(frozen=True, slots=True)
class Minute:
    minute: dt.datetime
    accepted: int
    refused: int


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One request a job came from (or was deduplicated into), kept as evidence."""

    id: uuid.UUID
    received_at: dt.datetime
    request_id: str | None
    accepted: bool
    rejection_code: str | None
    headers: dict[str, str]
    body_preview: bytes | None  # the first bytes of the body (None: not kept)
    body_size: int | None


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

    async def per_minute(self, *, minutes: int) -> builtins.list[Minute]:
        """Accepted and refused requests per minute, the last `minutes`, oldest first."""
        return [Minute(**dict(r)) for r in await self._db.fetch(Q["inbox_per_minute"], minutes)]

    async def for_job(self, *, job_id: uuid.UUID, preview_bytes: int) -> builtins.list[JobRequest]:
        rows = await self._db.fetch(Q["inbox_for_job"], job_id, preview_bytes)
        return [JobRequest(**{**dict(r), "headers": orjson.loads(r["headers"])}) for r in rows]

    async def counts(self, *, tenant_id: uuid.UUID | None = None) -> InboxCounts:
        """Accepted and refused requests of the last 24 hours."""
        row = await self._db.fetchrow(Q["admin_inbox_counts"], tenant_id)
        return InboxCounts(accepted=row["accepted"], rejected=row["rejected"])

    async def body_size(self, *, inbox_id: uuid.UUID) -> int | None:
        """The stored body's size; None when there is no such row or its body was not kept."""
        size = await self._db.fetchval(Q["inbox_body_size"], inbox_id)
        return None if size is None else int(size)

    async def body_chunk(self, *, inbox_id: uuid.UUID, offset: int, length: int) -> bytes:
        """`length` bytes of a stored body from `offset` (0-based); fewer at its end."""
        chunk = await self._db.fetchval(Q["inbox_body_chunk"], inbox_id, offset + 1, length)
        return bytes(chunk or b"")
