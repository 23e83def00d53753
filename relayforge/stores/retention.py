"""Retention: what is old enough to delete, table by table."""

from __future__ import annotations

from relayforge.stores.base import Q, Store


class RetentionStore(Store):
    async def prune(self, *, inbox_days: int, jobs_days: int, outbox_days: int,
                    audit_days: int) -> None:
        await self._db.execute(Q["outbox_prune_sent"], outbox_days)
        await self._db.execute(Q["prune_inbox"], inbox_days)
        await self._db.execute(Q["prune_jobs"], jobs_days)
        await self._db.execute(Q["prune_stripe_idempotency"], inbox_days)
        await self._db.execute(Q["prune_quota"])
        await self._db.execute(Q["prune_audit"], audit_days)
