"""Tenants the deployment knows of, for the console's tenant picker (tenants are not a table:
they are whoever has destinations, sources or secrets, or sent webhooks lately)."""

from __future__ import annotations

import uuid

from relayforge.stores.base import Q, Store


class TenantStore(Store):
    async def known(self, *, limit: int) -> list[uuid.UUID]:
        return [r["tenant_id"] for r in await self._db.fetch(Q["tenants_known"], limit)]
