"""Process leases: which processes share the deployment's limits right now."""

from __future__ import annotations

from relayforge.stores.base import Q, Store


class LeaseStore(Store):
    async def renew(self, *, process_id: str, kind: str, seconds: float) -> tuple[int, int]:
        """Hold the lease `seconds` more: (live processes of the kind, this one's rank)."""
        row = await self._db.fetchrow(Q["process_lease_renew"], process_id, kind, seconds)
        return int(row["members"]), int(row["rank"])

    async def release(self, *, process_id: str) -> None:
        await self._db.execute(Q["process_lease_release"], process_id)
