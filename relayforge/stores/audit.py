"""admin_audit_log: the one writer of audit rows (admin API and CLI alike)."""

from __future__ import annotations

from typing import Any

import orjson

from relayforge.security.roles import Actor
from relayforge.stores.base import Q, Store


class AuditLog(Store):
    async def write(self, *, actor: Actor, action: str, target: str,
                    detail: dict[str, Any] | None = None) -> None:
        await self._db.execute(Q["audit_insert"], actor.key_id, actor.source, actor.role, action,
                               target, orjson.dumps(detail or {}).decode())
