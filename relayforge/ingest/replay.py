"""Stripe-style anti-replay: a provider event id is accepted once per tenant (409 after), for
RETENTION__INBOX_DAYS at least (its keys are kept in generations of that many days).

Checked read-only before the quota (a replay never costs quota), then claimed inside the
ingest transaction, where an id claimed meanwhile by a concurrent batch is a replay too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from relayforge.errors import ReplayedEvent
from relayforge.ingest.arrival import Arrival
from relayforge.stores.ingest import EventKey, IngestStore


def replayed() -> ReplayedEvent:
    return ReplayedEvent("this Stripe event was already received for this tenant",
                         signature_valid=True)


def _open_by_key(batch: Sequence[Arrival]) -> dict[EventKey, Arrival]:
    """Open replay-protected items by event; a repeat within the batch is the replay."""
    wanted: dict[EventKey, Arrival] = {}
    for d in batch:
        key = d.event_key
        if key is None or not d.open:
            continue
        if key in wanted:
            d.error = replayed()
        else:
            wanted[key] = d
    return wanted


async def check(store: IngestStore, batch: Sequence[Arrival], *, span_days: int) -> None:
    """409 for events already received (before the quota is reserved)."""
    wanted = _open_by_key(batch)
    if wanted:
        for key in await store.seen_events(keys=list(wanted), span_days=span_days,
                                           at=dt.datetime.now(dt.UTC)):
            wanted[key].error = replayed()


async def claim(store: IngestStore, batch: Sequence[Arrival], *, span_days: int) -> list[Arrival]:
    """Claim the open items' event ids in the transaction; returns the items found to be
    replays. A claim rolls back with its transaction, so a failed write claims nothing."""
    wanted = _open_by_key(batch)
    if not wanted:
        return []
    fresh = await store.claim_events(keys=list(wanted), span_days=span_days,
                                     at=dt.datetime.now(dt.UTC))
    return [d for key, d in wanted.items() if key not in fresh]
