"""The daily quota per tenant: reserved per batch in one autocommit statement (the tenant's
row is locked only while it runs, never for a whole transaction), given back for every item
that ends up not recorded. A refused request reserves nothing."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from relayforge.errors import QuotaExceeded
from relayforge.ingest.arrival import Arrival
from relayforge.stores.ingest import IngestStore

log = logging.getLogger(__name__)


def seconds_to_utc_midnight(now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds()) + 1)


class QuotaLedger:
    def __init__(self, store: IngestStore, daily_limit: int) -> None:
        self._store = store
        self._limit = daily_limit  # 0: no quota

    async def reserve(self, batch: Sequence[Arrival]) -> None:
        """One unit per open item; the earliest items of a tenant get what is left, the others
        are refused (429)."""
        candidates = [d for d in batch if d.open]
        if self._limit <= 0 or not candidates:
            return
        wanted: Counter[uuid.UUID] = Counter(d.tenant_id for d in candidates)
        granted, day = await self._store.reserve_quota(wanted=wanted, limit=self._limit)
        for d in candidates:
            if granted[d.tenant_id] > 0:
                granted[d.tenant_id] -= 1
                d.quota_day = day
            else:
                d.error = QuotaExceeded("daily quota exceeded for this tenant",
                                        retry_after=seconds_to_utc_midnight())

    async def refund(self, items: Sequence[Arrival]) -> None:
        """Give back the units of these items (not recorded after all)."""
        by_day: dict[date, Counter[uuid.UUID]] = {}
        for d in items:
            if d.quota_day is not None:
                by_day.setdefault(d.quota_day, Counter())[d.tenant_id] += 1
                d.quota_day = None
        for day, counts in by_day.items():
            try:
                await self._store.refund_quota(counts=counts, quota_date=day)
            except Exception as exc:  # a lost refund only makes the quota stricter: go on
                log.warning("quota refund failed",
                            extra={"error": repr(exc), "units": counts.total()})
