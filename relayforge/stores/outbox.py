"""outbox_messages: what the relay claims (SKIP LOCKED leases), publishes and marks sent."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from relayforge.stores.base import Q, Store


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    job_id: uuid.UUID
    tenant_id: uuid.UUID
    source: str
    attempt: int  # the job attempt this message starts
    headers: str  # JSON object text: W3C headers and correlation id


@dataclass(frozen=True, slots=True)
class NextDue:
    """Seconds until the earliest row is due (negative when overdue; None when there is none)."""

    outbox: float | None
    deliveries: float | None


@dataclass(frozen=True, slots=True)
class PipelineLag:
    outbox_pending: int
    outbox_oldest_age: float | None  # seconds; None when nothing is pending
    pending: int
    queued: int
    processing: int
    retrying: int
    oldest_waiting_age: float | None  # the oldest queued or retrying job, seconds


class OutboxStore(Store):
    async def lag(self) -> PipelineLag:
        """The pipeline's backlog, for /metrics in every process."""
        return PipelineLag(**dict(await self._db.fetchrow(Q["pipeline_lag"])))

    async def claim(self, *, limit: int, lease_seconds: float, owner: str) -> list[OutboxRow]:
        rows = await self._db.fetch(Q["outbox_claim"], limit, lease_seconds, owner)
        return [OutboxRow(**dict(r)) for r in rows]

    async def mark_sent(self, *, ids: Sequence[int]) -> None:
        """Sent, and their jobs queued, in one statement."""
        await self._db.execute(Q["outbox_mark_sent"], list(ids))

    async def release(self, *, ids: Sequence[int], error: str, delay_seconds: float) -> None:
        await self._db.execute(Q["outbox_release"], list(ids), error, delay_seconds)

    async def publish_failed(self, *, failures: Sequence[tuple[int, str]], delay_seconds: float,
                             max_failures: int) -> list[uuid.UUID]:
        """Count a refusal against each row; rows at `max_failures` are set aside and their
        jobs dead-lettered: returns those jobs."""
        rows = await self._db.fetch(Q["outbox_publish_failed"], [i for i, _ in failures],
                                    [e for _, e in failures], delay_seconds, max_failures)
        return [r["id"] for r in rows]

    async def release_mine(self, *, owner: str) -> None:
        await self._db.execute(Q["outbox_release_mine"], owner)

    async def pending_count(self) -> int:
        count: int = await self._db.fetchval(Q["outbox_pending_count"])
        return count

    async def next_due(self) -> NextDue:
        """When the relay has work next, in the outbox and in deliveries."""
        row = await self._db.fetchrow(Q["relay_next_due"])
        return NextDue(row["outbox"], row["deliveries"])

    async def requeue_volatile(self) -> int:
        """Re-arm the next message of every waiting job (the in-process broker lost them)."""
        return len(await self._db.fetch(Q["outbox_requeue_volatile"]))
