"""Records verified webhooks: Stripe replay claims, daily quota, then inbox + job + outbox, in one
transaction.

Group commit: in `batch` mode concurrent requests are queued and written by a few writer tasks,
each batch in one transaction of multi-row statements, each request awaiting its own result. The
number of transactions (and of row-lock holds on a hot job or quota row) grows with batches, not
with requests. `single` mode writes each request in its own transaction, for comparison.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from relayforge.connectors.base import DomainEvent
from relayforge.db.pool import CONNECTION_ERRORS, on_connection_error
from relayforge.db.queries import Q
from relayforge.errors import (
    InvalidPayload,
    QuotaExceeded,
    RelayforgeError,
    ReplayedEvent,
    Unavailable,
)
from relayforge.ids import new_id
from relayforge.observability import metrics
from relayforge.settings import Settings

log = logging.getLogger("relayforge.ingest")

RETRYABLE_DB_ERRORS = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
# What one item's values can make PostgreSQL refuse (SQLSTATE classes 22 and 23).
ITEM_DB_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
WRITE_TRIES = 3


@dataclass(slots=True)
class Delivery:
    """One request whose signature verified, ready to be recorded."""

    tenant_id: uuid.UUID
    source: str
    payload_hash: str
    evidence_headers: str  # JSON object text
    body: bytes
    request_id: str
    correlation_id: str
    trace_context: str  # JSON object text: W3C headers + correlation id
    event: DomainEvent | None = None  # None when `rejection` is set
    event_json: bytes = b""  # the event as stored, written before the batch so it fails alone
    replay_protected: bool = False
    rejection: RelayforgeError | None = None  # refused before the transaction; row kept as evidence

    @property
    def dedup_key(self) -> str:
        assert self.event is not None
        if self.event.provider_event_id is not None:
            return "provider:" + self.event.provider_event_id
        return "hash:" + self.payload_hash


@dataclass(slots=True)
class Recorded:
    inbox_id: uuid.UUID | None
    job_id: uuid.UUID | None = None
    job_created: bool = False
    error: RelayforgeError | None = None


def seconds_to_utc_midnight(now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds()) + 1)


class IngestWriter:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._batch_mode = settings.ingest.mode == "batch"
        self._batch_max = settings.ingest.batch_max_size
        self._pending: list[tuple[Delivery, asyncio.Future[Recorded]]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        if self._batch_mode:
            self._tasks = [
                asyncio.create_task(self._writer(), name=f"ingest-writer-{i}")
                for i in range(self._settings.ingest.writers)
            ]

    async def close(self) -> None:
        """Finish what was queued, then stop the writers."""
        self._closing = True
        self._wake.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def record(self, delivery: Delivery) -> Recorded:
        if not self._batch_mode:
            return (await self._write_or_unavailable([delivery]))[0]
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._pending.append((delivery, future))
        self._wake.set()
        return await future

    async def _writer(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._pending[: self._batch_max]
            del self._pending[: self._batch_max]
            try:
                results = await self._write_or_unavailable([d for d, _ in batch])
            except Unavailable as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # the client may have gone; the row is recorded anyway
                    future.set_result(result)

    async def _write_or_unavailable(self, batch: list[Delivery]) -> list[Recorded]:
        try:
            return await self._write_isolating(batch)
        except Exception as exc:  # the database is unreachable: nothing acked
            await on_connection_error(self._pool, exc)
            log.error("ingest batch failed", extra={"error": repr(exc), "size": len(batch)})
            raise Unavailable("the database is unavailable, retry later", retry_after=5) from exc

    async def _write_isolating(self, batch: list[Delivery]) -> list[Recorded]:
        """Write the batch. A failure other than the database being unreachable may belong to
        one item: the halves are written apart, down to that item, which alone is refused.
        Each write is whole (replays, quota, transaction, refund), so a retried half is too."""
        try:
            return await self._write_with_retry(batch)
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:
            if len(batch) > 1:
                half = len(batch) // 2
                return (await self._write_isolating(batch[:half])
                        + await self._write_isolating(batch[half:]))
            if isinstance(exc, ITEM_DB_ERRORS):
                log.warning("webhook could not be stored", extra={"error": repr(exc)})
                return [Recorded(None, error=InvalidPayload(
                    "the payload could not be stored", signature_valid=True))]
            log.exception("webhook could not be stored")  # a bug: this request alone gets 500
            return [Recorded(None, error=RelayforgeError("internal error"))]

    async def _write_with_retry(self, batch: list[Delivery]) -> list[Recorded]:
        """Replay check → quota reservation → one transaction; refused items give units back.

        The quota row is locked by one autocommit statement, never for a whole transaction,
        so a tenant's concurrent batches (or requests, in single mode) don't queue behind it.
        """
        metrics.INGEST_BATCH_SIZE.observe(len(batch))
        results: list[Recorded | None] = [None] * len(batch)
        await self._check_replays(batch, results)
        reserved, quota_date = await self._reserve_quota(batch, results)
        try:
            for attempt in range(1, WRITE_TRIES + 1):
                attempt_results = list(results)  # a rolled-back try leaves no trace
                try:
                    async with self._pool.acquire() as conn, conn.transaction():
                        await self._claim_stripe_events(conn, batch, attempt_results)
                        await self._accept(conn, batch, attempt_results)
                        await self._store_rejections(conn, batch, attempt_results)
                    results = attempt_results
                    break
                except RETRYABLE_DB_ERRORS:
                    if attempt == WRITE_TRIES:
                        raise
        except BaseException:
            await self._refund(batch, reserved, quota_date)  # nothing was recorded
            raise
        # Units reserved for items the transaction refused (a Stripe replay that raced) go back.
        refused = [i for i in reserved if (r := results[i]) is not None and r.error is not None]
        await self._refund(batch, refused, quota_date)
        return [r if r is not None else Recorded(None) for r in results]

    def _stripe_items(self, batch: list[Delivery], results: list[Recorded | None]
                      ) -> dict[tuple[uuid.UUID, str], int]:
        """Replay-protected items still open, by (tenant, event id); in-batch repeats get 409."""
        wanted: dict[tuple[uuid.UUID, str], int] = {}
        for i, d in enumerate(batch):
            if (d.rejection is None and results[i] is None and d.replay_protected and d.event
                    and d.event.provider_event_id):
                key = (d.tenant_id, d.event.provider_event_id)
                if key in wanted:  # the same event twice in one batch: the later is the replay
                    results[i] = Recorded(None, error=_replayed())
                else:
                    wanted[key] = i
        return wanted

    async def _check_replays(self, batch: list[Delivery], results: list[Recorded | None]) -> None:
        """409 for events already seen, before the quota: a replay never costs quota."""
        wanted = self._stripe_items(batch, results)
        if not wanted:
            return
        keys = sorted(wanted)
        for row in await self._pool.fetch(Q["stripe_seen_events"], [k[0] for k in keys],
                                          [k[1] for k in keys]):
            results[wanted[(row["tenant_id"], row["event_id"])]] = Recorded(None, error=_replayed())

    async def _reserve_quota(self, batch: list[Delivery], results: list[Recorded | None]
                             ) -> tuple[list[int], object]:
        """Reserve one unit per open item in one statement; items past the quota get 429."""
        limit = self._settings.hardening.tenant_daily_quota
        candidates = [i for i, d in enumerate(batch) if d.rejection is None and results[i] is None]
        if limit <= 0 or not candidates:
            return [], None
        wanted: dict[uuid.UUID, int] = defaultdict(int)
        for i in candidates:
            wanted[batch[i].tenant_id] += 1
        tenants = sorted(wanted)
        rows = await self._pool.fetch(Q["quota_reserve"], tenants, [wanted[t] for t in tenants],
                                      limit)
        granted = {r["tenant_id"]: r["granted"] for r in rows}
        quota_date = rows[0]["quota_date"]
        reserved = []
        for i in candidates:  # the earliest items of a tenant get its remaining units
            tenant = batch[i].tenant_id
            if granted[tenant] > 0:
                granted[tenant] -= 1
                reserved.append(i)
            else:
                results[i] = Recorded(None, error=QuotaExceeded(
                    "daily quota exceeded for this tenant", retry_after=seconds_to_utc_midnight()))
        return reserved, quota_date

    async def _refund(self, batch: list[Delivery], items: list[int], quota_date: object) -> None:
        if not items:
            return
        counts: dict[uuid.UUID, int] = defaultdict(int)
        for i in items:
            counts[batch[i].tenant_id] += 1
        tenants = sorted(counts)
        try:
            await self._pool.execute(Q["quota_refund"], tenants, [counts[t] for t in tenants],
                                     quota_date)
        except Exception as exc:  # a lost refund only makes the quota stricter; never fail on it
            log.warning("quota refund failed", extra={"error": repr(exc), "units": len(items)})

    async def _claim_stripe_events(
        self, conn: asyncpg.Connection, batch: list[Delivery], results: list[Recorded | None]
    ) -> None:
        """Claim event ids in the transaction; one claimed meanwhile by a concurrent batch is a
        replay (409). A claim rolls back with the transaction, so a failed write reserves none."""
        wanted = self._stripe_items(batch, results)
        if not wanted:
            return
        keys = sorted(wanted)
        rows = await conn.fetch(
            Q["stripe_claim_events"], [k[0] for k in keys], [k[1] for k in keys]
        )
        fresh = {(r["tenant_id"], r["event_id"]) for r in rows}
        for key, i in wanted.items():
            if key not in fresh:
                results[i] = Recorded(None, error=_replayed())

    async def _accept(
        self, conn: asyncpg.Connection, batch: list[Delivery], results: list[Recorded | None]
    ) -> None:
        accepted = [i for i, d in enumerate(batch) if d.rejection is None and results[i] is None]
        if not accepted:
            return
        items = [batch[i] for i in accepted]
        inbox_ids = [new_id() for _ in items]
        events = [d.event for d in items]
        rows = await conn.fetch(
            Q["ingest_accept"],
            list(range(len(items))),
            inbox_ids,
            [new_id() for _ in items],
            [d.tenant_id for d in items],
            [d.source for d in items],
            [e.event_type for e in events if e],
            [e.provider_event_id for e in events if e],
            [d.dedup_key for d in items],
            [d.payload_hash for d in items],
            [d.evidence_headers for d in items],
            [d.body for d in items],
            [d.event_json for d in items],
            [d.request_id for d in items],
            [d.correlation_id for d in items],
            [d.trace_context for d in items],
            self._settings.worker.max_attempts,
            self._settings.amqp.routing_prefix,
        )
        for row in rows:
            ord_ = row["ord"]
            results[accepted[ord_]] = Recorded(inbox_ids[ord_], row["job_id"], row["job_created"])
            if row["job_created"]:
                metrics.JOBS_CREATED.labels(items[ord_].source).inc()

    async def _store_rejections(
        self, conn: asyncpg.Connection, batch: list[Delivery], results: list[Recorded | None]
    ) -> None:
        """Keep a row for requests refused after their signature verified (not for quota)."""
        keep_body = self._settings.webhooks.store_rejected_bodies
        rows: list[tuple[int, Delivery, RelayforgeError]] = []
        for i, d in enumerate(batch):
            result = results[i]
            error = d.rejection or (result.error if result is not None else None)
            if error is not None and not isinstance(error, QuotaExceeded):
                rows.append((i, d, error))
        if not rows:
            return
        ids = [new_id() for _ in rows]
        await conn.execute(
            Q["inbox_insert_rejected"],
            ids,
            [d.tenant_id for _, d, _ in rows],
            [d.source for _, d, _ in rows],
            [d.event.event_type if d.event else None for _, d, _ in rows],
            [d.event.provider_event_id if d.event else None for _, d, _ in rows],
            [d.payload_hash for _, d, _ in rows],
            [d.evidence_headers for _, d, _ in rows],
            [d.body if keep_body else None for _, d, _ in rows],
            [e.code for _, _, e in rows],
            [d.request_id for _, d, _ in rows],
        )
        for inbox_id, (i, _, error) in zip(ids, rows, strict=True):
            error.inbox_id = inbox_id
            error.signature_valid = True
            results[i] = Recorded(inbox_id, error=error)


def _replayed() -> ReplayedEvent:
    return ReplayedEvent("this Stripe event was already received for this tenant",
                         signature_valid=True)
