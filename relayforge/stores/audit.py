"""admin_audit_log: the one writer of audit rows (admin API and CLI alike)."""

from __future__ import annotations

import builtins
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from relayforge.roles import Actor
from relayforge.stores.base import Q, Store


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    key_id: uuid.UUID | None
    key_source: str
    role: str
    action: str
    target: str | None
    detail: str  # JSON text
    created_at: dt.datetime


class AuditLog(Store):
    async def list(self, *, limit: int, before: int | None = None) -> list[AuditEntry]:
        """Newest first; `before`: the last id of the previous page."""
        rows = await self._db.fetch(Q["audit_list"], limit, before)
        return [AuditEntry(**dict(r)) for r in rows]

    async def for_job(self, *, job_id: uuid.UUID) -> builtins.list[AuditEntry]:
        """What was done to a job through the admin API, console or CLI, oldest first."""
        rows = await self._db.fetch(Q["audit_for_job"], str(job_id))
        return [AuditEntry(**dict(r)) for r in rows]

    async def write(self, *, actor: Actor, action: str, target: str,
                    detail: dict[str, Any] | None = None) -> None:
        await self._db.execute(Q["audit_insert"], actor.key_id, actor.source, actor.role, action,
                               target, orjson.dumps(detail or {}).decode())
