"""Retention: what is old enough to delete, table by table."""

from __future__ import annotations

from relayforge.stores.base import Q, Store


class RetentionStore(Store):
    """Works on one connection inside a transaction (`Stores.transaction()`): the prune holds
    the retention lock until it commits, and a dry run rolls it back."""

    async def lock(self) -> bool:
        """False while another process prunes."""
        return bool(await self._db.fetchval(Q["retention_lock"]))

    async def prune(self, *, inbox_days: int, jobs_days: int, outbox_days: int,
                    audit_days: int) -> dict[str, int]:
        """Delete what retention allows; rows deleted per table."""
        steps = (("outbox_messages", "outbox_prune_sent", (outbox_days,)),
                 ("webhook_inbox", "prune_inbox", (inbox_days,)),
                 ("jobs", "prune_jobs", (jobs_days,)),
                 ("stripe_event_idempotency", "prune_stripe_idempotency", (inbox_days,)),
                 ("tenant_daily_quota_usage", "prune_quota", ()),
                 ("admin_audit_log", "prune_audit", (audit_days,)))
        deleted = {}
        for table, query, args in steps:
            status = await self._db.execute(Q[query], *args)  # "DELETE <n>"
            deleted[table] = int(status.rsplit(" ", 1)[1])
        return deleted
