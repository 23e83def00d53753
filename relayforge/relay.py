"""Outbox → broker: claim due rows (SKIP LOCKED lease), publish the batch with pipelined
confirms, mark them sent and their jobs queued. Woken by LISTEN/NOTIFY, polling as a fallback.

It never dies on an error: with the database or broker down it logs, backs off and resumes;
rows it had claimed become claimable again when their lease passes. The relay also runs the
periodic upkeep: recovering jobs whose consumer died (lease), the outbox gauge, and retention.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid

import asyncpg
import orjson

from relayforge.broker import (
    ATTEMPT_HEADER,
    CORRELATION_HEADER,
    JOB_ID_HEADER,
    Broker,
    OutgoingMessage,
    Refused,
)
from relayforge.db.pool import on_connection_error
from relayforge.db.queries import Q
from relayforge.ids import MAX_CLIENT_ID_LENGTH
from relayforge.observability import metrics, tracing
from relayforge.settings import Settings

log = logging.getLogger("relayforge.relay")

NOTIFY_CHANNEL = "relayforge_outbox"
MAX_ERROR_BACKOFF_SECONDS = 30.0
PUBLISH_RETRY_SECONDS = 1.0
RECOVER_BATCH = 500
PRUNE_INTERVAL_SECONDS = 3600.0
UPKEEP_INTERVAL_SECONDS = 1.0  # lease recovery and the backlog gauge, not once per batch


class Relay:
    def __init__(self, pool: asyncpg.Pool, broker: Broker, settings: Settings) -> None:
        self._pool = pool
        self._broker = broker
        self._settings = settings
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_prune = time.monotonic() + 60
        self._next_upkeep = 0.0
        self._identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._release_claims = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()

    async def _run(self) -> None:
        errors = 0
        while True:
            try:
                if self._release_claims:
                    await self._pool.execute(Q["outbox_release_mine"], self._identity)
                    self._release_claims = False
                await self._ensure_listener()
                published = await self.relay_once()
                await self.upkeep()
                errors = 0
                if published >= self._settings.relay.batch_size:
                    continue  # more is due: don't wait
                await self._sleep_until_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database or broker trouble: back off, never die
                await on_connection_error(self._pool, exc)
                self._release_claims = True
                errors += 1
                delay = min(MAX_ERROR_BACKOFF_SECONDS, 0.25 * 2 ** min(errors, 8))
                log.warning("relay loop failed, backing off",
                            extra={"error": repr(exc), "retry_in_seconds": delay})
                await asyncio.sleep(delay)

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            self._listener = await asyncpg.connect(self._settings.database.url)
            await self._listener.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as exc:  # polling still covers
            self._listener = None
            log.warning("outbox listener unavailable", extra={"error": repr(exc)})

    async def _sleep_until_due(self) -> None:
        timeout = self._settings.relay.poll_interval_ms / 1000
        next_due = await self._pool.fetchval(Q["outbox_next_due_in"])
        if next_due is not None:
            timeout = max(0.0, min(timeout, next_due))
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    async def relay_once(self) -> int:
        """Publish one batch of due rows; returns how many were claimed."""
        s = self._settings
        rows = await self._pool.fetch(Q["outbox_claim"], s.relay.batch_size,
                                      float(s.relay.claim_timeout_seconds), self._identity)
        if not rows:
            return 0
        messages = [self._message(r) for r in rows]
        errors = await self._publish(messages)
        if len(messages) > 1 and any(errors):
            await self._isolate(messages, errors)
        sent = [m.outbox_id for m, err in zip(messages, errors, strict=True) if err is None]
        if sent:
            await self._pool.execute(Q["outbox_mark_sent"], sent)
            metrics.OUTBOX_PUBLISHED.inc(len(sent))
        await self._record_failures(messages, errors, took_some=bool(sent))
        return len(rows)

    async def _publish(self, messages: list[OutgoingMessage]) -> list[BaseException | None]:
        try:
            return await self._broker.publish(messages)
        except Exception as exc:
            return [exc] * len(messages)

    async def _isolate(self, messages: list[OutgoingMessage],
                       errors: list[BaseException | None]) -> None:
        """A failed batch may hold one message that broke it (and its channel) for all: the
        failed ones go again one at a time, so the rest go through and the culprit is named.
        Stops at the first failure while nothing went through: then the broker is down."""
        took_some = not all(errors)
        for i, (message, error) in enumerate(zip(messages, errors, strict=True)):
            if error is None or isinstance(error, Refused):
                continue
            [errors[i]] = await self._publish([message])
            if errors[i] is None:
                took_some = True
            elif not took_some:
                return

    async def _record_failures(self, messages: list[OutgoingMessage],
                               errors: list[BaseException | None], took_some: bool) -> None:
        """Rows the broker refused while it was up count against themselves (a row at
        RELAY__MAX_PUBLISH_FAILURES is set aside, its job dead-lettered); the others, failed
        while the broker was down, are only released for a later try."""
        failed = [(m.outbox_id, err) for m, err in zip(messages, errors, strict=True)
                  if err is not None]
        if not failed:
            return
        metrics.OUTBOX_PUBLISH_FAILURES.inc(len(failed))
        log.warning("publish failed; rows released for retry",
                    extra={"count": len(failed), "error": repr(failed[0][1])})
        counted = [(i, err) for i, err in failed if took_some or isinstance(err, Refused)]
        released = [i for i, err in failed if not (took_some or isinstance(err, Refused))]
        if released:
            await self._pool.execute(Q["outbox_release"], released, repr(failed[0][1])[:500],
                                     PUBLISH_RETRY_SECONDS)
        if counted:
            dead = await self._pool.fetch(
                Q["outbox_publish_failed"], [i for i, _ in counted],
                [repr(err)[:500] for _, err in counted], PUBLISH_RETRY_SECONDS,
                self._settings.relay.max_publish_failures)
            for row in dead:
                metrics.OUTBOX_SET_ASIDE.inc()
                metrics.DLQ_MESSAGES.inc()
                log.error("unpublishable message set aside; its job is dead-lettered",
                          extra={"job_id": str(row["id"])})

    def _message(self, row: asyncpg.Record) -> OutgoingMessage:
        """Only known headers go out, each bounded: a row written before the W3C bounds (or by
        hand) can't make a message larger than the broker's frame."""
        carried: dict[str, object] = orjson.loads(row["headers"])
        headers = tracing.bounded({k: str(v) for k, v in carried.items()
                                   if k in tracing.W3C_HEADERS})
        correlation_id = carried.get(CORRELATION_HEADER)
        if isinstance(correlation_id, str) and len(correlation_id) <= MAX_CLIENT_ID_LENGTH:
            headers[CORRELATION_HEADER] = correlation_id
        else:
            headers[CORRELATION_HEADER] = str(row["job_id"])
        headers[JOB_ID_HEADER] = str(row["job_id"])
        headers[ATTEMPT_HEADER] = str(row["attempt"])
        body = orjson.dumps({
            "job_id": str(row["job_id"]), "tenant_id": str(row["tenant_id"]),
            "attempt": row["attempt"],
        })
        return OutgoingMessage(row["id"], row["routing_key"], body, headers,
                               message_id=f"{row['job_id']}:{row['attempt']}")

    async def upkeep(self) -> None:
        if time.monotonic() < self._next_upkeep:
            return
        self._next_upkeep = time.monotonic() + UPKEEP_INTERVAL_SECONDS
        s = self._settings
        recovered = await self._pool.fetch(Q["jobs_recover_expired"], RECOVER_BATCH,
                                           s.amqp.routing_prefix)
        for r in recovered:
            metrics.JOBS_RECOVERED.inc()
            if r["status"] == "dead_lettered":
                metrics.DLQ_MESSAGES.inc()
            log.warning("job lease expired", extra={"job_id": str(r["id"]), "now": r["status"]})
        metrics.OUTBOX_PENDING.set(await self._pool.fetchval(Q["outbox_pending_count"]))
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
            await self.prune()

    async def prune(self) -> None:
        r = self._settings.retention
        await self._pool.execute(Q["outbox_prune_sent"], r.outbox_days)
        await self._pool.execute(Q["prune_inbox"], r.inbox_days)
        await self._pool.execute(Q["prune_jobs"], r.jobs_days)
        await self._pool.execute(Q["prune_stripe_idempotency"], r.inbox_days)
        await self._pool.execute(Q["prune_quota"])
        await self._pool.execute(Q["prune_audit"], r.audit_days)
