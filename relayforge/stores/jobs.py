"""jobs: the state machine's transitions (each a conditional UPDATE in SQL) and the read models."""

from __future__ import annotations

import builtins
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from relayforge.events import DomainEvent
from relayforge.jobs import JobStatus
from relayforge.models import JobCounts, JobView, record
from relayforge.stores.base import Q, Store


@dataclass(frozen=True, slots=True)
class StartedJob:
    """A job that has just moved to `processing` for one attempt."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    source: str
    event: DomainEvent
    attempts: int
    max_attempts: int
    correlation_id: str | None
    trace_context: str
    destinations: str | None = None  # its tenant's enabled destinations (JSON), for fan-out
    # Its first delivery's body and content type, for its deliveries' requests (None: it has
    # no destinations, or the body is no longer kept)
    body: bytes | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class JobContextIds:
    trace_id: str | None
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    attempt: int
    error: str | None
    finished_at: dt.datetime


@dataclass(frozen=True, slots=True)
class JobState:
    status: JobStatus
    attempts: int
    max_attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Recovered:
    id: uuid.UUID
    status: JobStatus


def _event(row: Any) -> DomainEvent:
    """The job's event: stored whole, or put together from its first delivery's body."""
    return DomainEvent.stored(
        row["event"], source=row["source"], event_type=row["event_type"],
        provider_event_id=row["provider_event_id"], occurred_at_unix=row["occurred_at_unix"],
        data_path=row["data_path"], body=row["body"])


class JobStore(Store):
    async def start(self, *, job_id: uuid.UUID, attempt: int, lease_seconds: float
                    ) -> StartedJob | None:
        """Into `processing` only if `attempt` is exactly the job's next one."""
        started = await self.start_many(attempts=[(job_id, attempt)], lease_seconds=lease_seconds)
        return started[0] if started else None

    async def start_many(self, *, attempts: Sequence[tuple[uuid.UUID, int]],
                         lease_seconds: float) -> list[StartedJob]:
        """Start each (job, attempt) that is its job's next attempt; the others were stale."""
        rows = await self._db.fetch(Q["jobs_start"], [j for j, _ in attempts],
                                    [a for _, a in attempts], lease_seconds)
        return [StartedJob(
            id=r["id"], tenant_id=r["tenant_id"], source=r["source"], event=_event(r),
            attempts=r["attempts"], max_attempts=r["max_attempts"],
            correlation_id=r["correlation_id"], trace_context=r["trace_context"],
            destinations=r["destinations"], body=r["body"], content_type=r["content_type"])
            for r in rows]

    async def event(self, *, job_id: uuid.UUID) -> DomainEvent:
        """The normalized event of a job that exists."""
        return _event(await self._db.fetchrow(Q["job_event"], job_id))

    async def state(self, *, job_id: uuid.UUID) -> JobState | None:
        row = await self._db.fetchrow(Q["job_state"], job_id)
        return None if row is None else JobState(JobStatus(row["status"]), row["attempts"],
                                                 row["max_attempts"], row["last_error"])

    # Each outcome says whether it moved the job: an attempt's outcome stands while no later
    # attempt has started, and never moves a finished job.

    async def succeed(self, *, job_id: uuid.UUID, attempt: int) -> bool:
        return bool(await self.succeed_many(attempts=[(job_id, attempt)]))

    async def succeed_many(self, *, attempts: Sequence[tuple[uuid.UUID, int]]
                           ) -> dict[uuid.UUID, float]:
        """The jobs whose success was recorded (each attempt's own outcome, if still current),
        each with the seconds from its creation (the webhook's acceptance) to now."""
        rows = await self._db.fetch(Q["jobs_succeed"], [j for j, _ in attempts],
                                    [a for _, a in attempts])
        return {r["id"]: r["end_to_end"] for r in rows}

    async def retry(self, *, job_id: uuid.UUID, attempt: int, error: str, delay_seconds: float,
                    trace_context: str) -> bool:
        """Fail the attempt and owe the message of the next one after the delay, carrying
        `trace_context` (JSON object text: W3C headers), atomically."""
        return await self._db.fetchval(Q["job_retry"], job_id, attempt, error, delay_seconds,
                                       trace_context) is not None

    async def dead_letter(self, *, job_id: uuid.UUID, attempt: int, error: str) -> bool:
        return await self._db.fetchval(Q["job_dead_letter"], job_id, attempt,
                                       error) is not None

    async def recover_expired(self, *, limit: int) -> list[Recovered]:
        """Jobs whose consumer died mid-attempt: retried, or dead-lettered when spent."""
        rows = await self._db.fetch(Q["jobs_recover_expired"], limit)
        return [Recovered(r["id"], JobStatus(r["status"])) for r in rows]

    async def republish_stranded(self, *, queued_for_seconds: float, limit: int
                                 ) -> list[uuid.UUID]:
        """Jobs queued longer than that lost their message: publish it again."""
        rows = await self._db.fetch(Q["jobs_republish_stranded"], queued_for_seconds, limit)
        return [r["job_id"] for r in rows]

    async def reprocess(self, *, extra_attempts: int, limit: int, job_id: uuid.UUID | None = None,
                        tenant_id: uuid.UUID | None = None, source: str | None = None,
                        event_type: str | None = None) -> list[uuid.UUID]:
        """Dead-lettered jobs (one by id, or by filter) get a fresh budget and a new message."""
        rows = await self._db.fetch(Q["jobs_reprocess"], tenant_id, source, event_type, limit,
                                    extra_attempts, job_id)
        return [r["job_id"] for r in rows]

    async def list(self, *, limit: int, status: JobStatus | None = None,
                   tenant_id: uuid.UUID | None = None, source: str | None = None,
                   event_type: str | None = None, cursor: uuid.UUID | None = None,
                   provider_event_id: str | None = None, since: dt.datetime | None = None,
                   until: dt.datetime | None = None) -> list[JobView]:
        """Newest first; every given filter holds (`since` inclusive, `until` exclusive)."""
        rows = await self._db.fetch(Q["admin_jobs_list"], status, tenant_id, source, event_type,
                                    cursor, limit, provider_event_id, since, until)
        return [record(JobView, r) for r in rows]

    async def context(self, *, job_id: uuid.UUID) -> JobContextIds:
        row = await self._db.fetchrow(Q["job_context"], job_id)
        traceparent = (row["traceparent"] or "") if row else ""
        parts = traceparent.split("-")
        return JobContextIds(parts[1] if len(parts) == 4 else None,
                             row["correlation_id"] if row else None)

    async def attempts_log(self, *, job_id: uuid.UUID) -> builtins.list[FailedAttempt]:
        """The job's failed attempts (a success is the job's own state)."""
        return [FailedAttempt(**dict(r)) for r in await self._db.fetch(Q["job_attempts_log"],
                                                                        job_id)]

    async def dead_lettered_count(self, *, tenant_id: uuid.UUID | None, source: str | None,
                                  event_type: str | None) -> int:
        count: int = await self._db.fetchval(Q["jobs_dead_lettered_count"], tenant_id, source,
                                             event_type)
        return count

    async def get(self, *, job_id: uuid.UUID) -> JobView | None:
        row = await self._db.fetchrow(Q["admin_job_get"], job_id)
        return None if row is None else record(JobView, row)

    async def counts(self, *, tenant_id: uuid.UUID | None = None) -> JobCounts:
        rows = await self._db.fetch(Q["admin_job_counts"], tenant_id)
        return JobCounts(**{r["status"]: r["n"] for r in rows})
