"""The jobs' outbox: a job owes the message of its next attempt while `message_due_at` is set.
The relay claims due ones in a transaction (SKIP LOCKED row locks, held while it publishes),
marks them sent (their jobs queued) and commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from relayforge.stores.base import Q, Store


@dataclass(frozen=True, slots=True)
class OutboxRow:
    job_id: uuid.UUID
    tenant_id: uuid.UUID
    source: str
    attempt: int  # the job attempt this message starts
    headers: str  # JSON object text: W3C headers and correlation id (the job's trace context)


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

    async def claim(self, *, limit: int) -> list[OutboxRow]:
        """Due messages, their jobs locked until the transaction this runs in ends."""
        return [OutboxRow(**dict(r)) for r in await self._db.fetch(Q["outbox_claim"], limit)]

    async def mark_sent(self, *, job_ids: Sequence[uuid.UUID]) -> None:
        """Confirmed: their jobs queued, in one statement."""
        await self._db.execute(Q["outbox_mark_sent"], list(job_ids))

    async def release(self, *, job_ids: Sequence[uuid.UUID], delay_seconds: float) -> None:
        await self._db.execute(Q["outbox_release"], list(job_ids), delay_seconds)

    async def publish_failed(self, *, failures: Sequence[tuple[uuid.UUID, str]],
                             delay_seconds: float, max_failures: int) -> list[uuid.UUID]:
        """Count a refusal against each job; a job at `max_failures` is set aside
        (dead-lettered): returns those."""
        rows = await self._db.fetch(Q["outbox_publish_failed"], [i for i, _ in failures],
                                    [e for _, e in failures], delay_seconds, max_failures)
        return [r["id"] for r in rows if r["set_aside"]]

    async def pending_count(self) -> int:
        count: int = await self._db.fetchval(Q["outbox_pending_count"])
        return count

    async def next_due(self) -> NextDue:
        """When the relay has work next, in the outbox and in deliveries."""
        row = await self._db.fetchrow(Q["relay_next_due"])
        return NextDue(row["outbox"], row["deliveries"])

    async def requeue_volatile(self) -> int:
        """Every queued job owes its message again (the in-process broker lost them)."""
        return len(await self._db.fetch(Q["outbox_requeue_volatile"]))
