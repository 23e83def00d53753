"""Records verified webhooks: replay check, quota reservation, then inbox + job rows (the job
its own outbox entry) in one transaction.

In `batch` mode (group commit) concurrent requests are written together, each batch in one
transaction of multi-row statements, so transactions grow with batches, not requests. `single`
mode writes each request in its own transaction, for comparison. One request never fails
another: a batch that fails for any reason but an unreachable database is narrowed down to
the item at fault, which alone is refused.

A process that also consumes starts new jobs itself (`HandOff`): the batch's statement begins
the first attempt of as many new jobs as the consumer has free slots for, leased as a start is,
and they go to the consumer once committed, with no message through the relay and the broker.
The lease is the record: should the process die first, the job is recovered as any job whose
consumer died.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
import orjson

from relayforge import retention
from relayforge.batcher import GroupCommitBatcher
from relayforge.db.pool import CONNECTION_ERRORS, on_connection_error
from relayforge.errors import InvalidPayload, QuotaExceeded, RelayforgeError, Unavailable
from relayforge.events import DomainEvent
from relayforge.ids import new_id
from relayforge.ingest import replay
from relayforge.ingest.arrival import Arrival
from relayforge.ingest.quota import QuotaLedger
from relayforge.observability import metrics
from relayforge.settings import Settings
from relayforge.stores import Stores
from relayforge.stores.ingest import Accepted, NewItem, RefusedItem
from relayforge.stores.jobs import StartedJob

log = logging.getLogger(__name__)

RETRYABLE_DB_ERRORS = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
# What one item's values can make PostgreSQL refuse (SQLSTATE classes 22 and 23).
ITEM_DB_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
WRITE_TRIES = 3


@dataclass(slots=True)
class Written:
    """What a committed transaction decided; applied to the arrivals only after commit, so
    a rolled-back try leaves no trace on them."""

    accepted: list[tuple[Arrival, NewItem, Accepted]]
    replays: list[Arrival]
    refused: list[tuple[Arrival, RefusedItem]]
    begun: set[uuid.UUID] = field(default_factory=set)  # jobs whose first attempt began here

    def apply(self) -> None:
        for d, item, outcome in self.accepted:
            d.inbox_id, d.job_id, d.job_created = item.inbox_id, outcome.job_id, outcome.job_created
            if outcome.job_created:
                metrics.child(metrics.JOBS_CREATED, d.source).inc()
        for d in self.replays:
            d.error = replay.replayed()
        for d, row in self.refused:
            error = d.failure or replay.replayed()
            error.inbox_id, error.signature_valid = row.inbox_id, True
            d.inbox_id = row.inbox_id


class HandOff(Protocol):
    """The consumer of this process, taking the jobs whose first attempt began at ingest."""

    async def reserve(self, wanted: int) -> int:
        """Take up to `wanted` free slots at once (never waits); returns how many."""

    def release(self, slots: int) -> None:
        """Give back reserved slots that no job took."""

    def run(self, job: StartedJob) -> None:
        """Run a started job in one reserved slot (returns at once)."""


class IngestWriter:
    def __init__(self, stores: Stores, settings: Settings) -> None:
        self._stores = stores
        self._settings = settings
        self.hand_off: HandOff | None = None  # set when this process consumes too
        self._quota = QuotaLedger(stores.ingest, settings.hardening.tenant_daily_quota)
        self._release_before_gone = False  # until start() finds the upgrade finished
        self._batcher: GroupCommitBatcher[Arrival] | None = None
        if settings.ingest.mode == "batch":
            self._batcher = GroupCommitBatcher(self._write_or_unavailable,
                                               max_size=settings.ingest.batch_max_size,
                                               writers=settings.ingest.writers)

    async def start(self) -> None:
        # Read once: a process started before `migrate --finish` keeps storing what the release
        # before reads.
        self._release_before_gone = await self._stores.ingest.job_keys_finished()
        if self._batcher is not None:
            self._batcher.start()

    async def close(self) -> None:
        """Finish what was queued, then stop the writers."""
        if self._batcher is not None:
            await self._batcher.close()

    async def record(self, arrival: Arrival) -> None:
        """Record it; its outcome is on it afterwards (`failure`, or inbox and job ids)."""
        if self._batcher is None:
            await self._write_or_unavailable([arrival])
        else:
            await self._batcher.submit(arrival)

    async def _write_or_unavailable(self, batch: list[Arrival]) -> None:
        try:
            await self._write_isolating(batch)
        except Exception as exc:  # the database is unreachable: nothing acked
            await on_connection_error(self._stores.db, exc)
            log.error("ingest batch failed", extra={"error": repr(exc), "size": len(batch)})
            raise Unavailable("the database is unavailable, retry later", retry_after=5) from exc

    async def _write_isolating(self, batch: list[Arrival]) -> None:
        """Write the batch. A failure other than the database being unreachable may belong to
        one item: the halves are written apart, down to that item, which alone is refused.
        Each write is whole (replays, quota, transaction, refund), so a retried half is too."""
        try:
            await self._write(batch)
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:
            if len(batch) > 1:
                half = len(batch) // 2
                await self._write_isolating(batch[:half])
                await self._write_isolating(batch[half:])
            elif isinstance(exc, ITEM_DB_ERRORS):
                log.warning("webhook could not be stored", extra={"error": repr(exc)})
                batch[0].error = InvalidPayload("the payload could not be stored",
                                                signature_valid=True)
            else:
                log.exception("webhook could not be stored")  # a bug: this request alone: 500
                batch[0].error = RelayforgeError("internal error")

    async def _write(self, batch: list[Arrival]) -> None:
        """Replay check → quota reservation → one transaction; refused items give units back."""
        metrics.INGEST_BATCH_SIZE.observe(len(batch))
        await replay.check(self._stores.ingest, batch,
                           span_days=self._settings.retention.inbox_days)
        await self._quota.reserve(batch)
        hand_off = self.hand_off
        slots = await hand_off.reserve(len(batch)) if hand_off is not None else 0
        try:
            written = await self._transaction_with_retry(batch, slots)
        except BaseException:
            if hand_off is not None:
                hand_off.release(slots)
            await self._quota.refund(batch)  # nothing was recorded
            raise
        written.apply()
        if hand_off is not None:
            max_attempts = self._settings.worker.max_attempts
            begun = [_begun(item, outcome, max_attempts) for _, item, outcome in written.accepted
                     if outcome.job_created and item.job_id in written.begun]
            hand_off.release(slots - len(begun))
            for job in begun:
                hand_off.run(job)
            metrics.JOBS_BEGUN_AT_INGEST.inc(len(begun))
        await self._quota.refund([d for d in batch if d.failure is not None])

    async def _transaction_with_retry(self, batch: list[Arrival], slots: int) -> Written:
        for attempt in range(1, WRITE_TRIES + 1):
            try:
                return await self._transaction(batch, slots)
            except RETRYABLE_DB_ERRORS:
                if attempt == WRITE_TRIES:
                    raise
            except asyncpg.UniqueViolationError as exc:
                # Until an upgrade is finished the release before's jobs_dedup holds the same
                # keys as jobs_key, which our upsert names: two first deliveries of one key at
                # once may meet there instead. Written again, the second finds the first's job.
                if exc.constraint_name != "jobs_dedup" or attempt == WRITE_TRIES:
                    raise
            except asyncpg.CheckViolationError as exc:
                # a day with no partition yet: made now, and the batch written again
                if not retention.is_missing_partition(exc) or attempt == WRITE_TRIES \
                        or not await retention.ensure_partitions(
                            self._stores, self._settings.retention, on_demand=True):
                    raise
        raise AssertionError("unreachable")

    async def _transaction(self, batch: Sequence[Arrival], slots: int) -> Written:
        if not any(d.event_key for d in batch if d.open) and not any(map(_kept_as_evidence, batch)):
            # One statement is atomic on its own: no BEGIN and COMMIT round trips.
            return await self._write_rows(self._stores, batch, slots)
        async with self._stores.transaction() as tx:
            return await self._write_rows(tx, batch, slots)

    async def _write_rows(self, tx: Stores, batch: Sequence[Arrival], slots: int) -> Written:
        replays = await replay.claim(tx.ingest, batch,
                                     span_days=self._settings.retention.inbox_days)
        accepting = [d for d in batch if d.open and d not in replays]
        items = [_new_item(d) for d in accepting]
        w = self._settings.worker
        here = {item.job_id for item in items[:slots]}
        outcomes = await tx.ingest.accept(
            items=items, max_attempts=w.max_attempts, start_here=list(here),
            lease_seconds=float(w.lease_seconds),
            release_before_gone=self._release_before_gone) if items else []
        refused = [(d, self._refused_item(d, d.failure.code if d.failure else "replayed_event"))
                   for d in batch if d in replays or _kept_as_evidence(d)]
        await tx.ingest.insert_refused(items=[row for _, row in refused])
        return Written(list(zip(accepting, items, outcomes, strict=True)), replays, refused, here)

    def _refused_item(self, d: Arrival, code: str) -> RefusedItem:
        return RefusedItem(
            inbox_id=new_id(), tenant_id=d.tenant_id, source=d.source,
            event_type=d.event_type, provider_event_id=d.provider_event_id,
            payload_hash=d.payload_hash, headers=d.evidence_headers,
            body=d.body if self._settings.webhooks.store_rejected_bodies else None, code=code,
            request_id=d.request_id)


def _kept_as_evidence(d: Arrival) -> bool:
    """Refused after the signature verified: a row is kept (not for quota: that sheds load)."""
    return d.failure is not None and not isinstance(d.failure, QuotaExceeded)


def _begun(item: NewItem, outcome: Accepted, max_attempts: int) -> StartedJob:
    """A job whose first attempt began in the batch, as job_start would have returned it."""
    event = DomainEvent.stored(
        item.event, source=item.source, event_type=item.event_type,
        provider_event_id=item.provider_event_id, occurred_at_unix=item.occurred_at_unix,
        data_path=item.data_path, body=item.body)
    return StartedJob(
        id=item.job_id, tenant_id=item.tenant_id, source=item.source, event=event, attempts=1,
        max_attempts=max_attempts, correlation_id=item.correlation_id,
        trace_context=item.trace_context, destinations=outcome.destinations,
        # as the inbox row keeps them: its content type is the one among its headers
        body=item.body, content_type=orjson.loads(item.headers).get("content-type")
        if outcome.destinations is not None else None)


def _new_item(d: Arrival) -> NewItem:
    assert d.event_type is not None
    return NewItem(
        inbox_id=new_id(), job_id=new_id(), tenant_id=d.tenant_id, source=d.source,
        event_type=d.event_type, provider_event_id=d.provider_event_id,
        dedup_key=d.dedup_key, payload_hash=d.payload_hash, headers=d.evidence_headers,
        body=d.body, event=d.event_json, request_id=d.request_id,
        correlation_id=d.correlation_id, trace_context=d.trace_context,
        occurred_at_unix=d.occurred_at_unix, data_path=d.data_path)
