"""Outbox → broker. Jobs owing a message: claimed in a transaction (SKIP LOCKED row locks),
published with pipelined confirms, marked sent (queued) and committed, so the claim costs no
write and a relay that dies leaves them claimable at once. Deliveries left to it (retries, and
those no consumer attempts itself) are leased (a claim written to the row) and published the
same way. Woken by LISTEN/NOTIFY, a channel for each, and by the time its next-due query gives;
polling as a fallback. Deliveries are claimed only when some may be due, not after every batch.

It never dies on an error: with the database or broker down it logs, backs off and resumes.
One message never blocks the others: a failed batch goes again one message at a time, and a
job whose message the broker keeps refusing is set aside (dead-lettered with the reason).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from relayforge import messages
from relayforge.broker import Broker, OutgoingMessage, Refused
from relayforge.db.listener import Listener
from relayforge.db.pool import on_connection_error
from relayforge.ids import process_identity
from relayforge.observability import metrics
from relayforge.settings import Settings
from relayforge.stores import Stores
from relayforge.stores.outbox import OutboxRow

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "relayforge_outbox"
DELIVERIES_CHANNEL = "relayforge_deliveries"
MAX_ERROR_BACKOFF_SECONDS = 30.0
PUBLISH_RETRY_SECONDS = 1.0
# Due messages another relay holds (it is publishing them): look again this soon, not at once.
HELD_RETRY_SECONDS = 0.05

Errors = list[BaseException | None]


class Relay:
    def __init__(self, stores: Stores, broker: Broker, settings: Settings,
                 listener: Listener) -> None:
        self._stores = stores
        self._outbox = stores.outbox
        self._broker = broker
        self._settings = settings
        self._wake = asyncio.Event()
        listener.on(NOTIFY_CHANNEL, self._wake.set)  # and polling as the fallback
        listener.on(DELIVERIES_CHANNEL, self._deliveries_woken)
        self._deliveries_at = 0.0  # (loop time) when deliveries may be due: claim them then
        self._poll_seconds = settings.relay.poll_interval_ms / 1000
        self._task: asyncio.Task[None] | None = None
        self._identity = process_identity()
        self._release_claims = False  # after an error: give back the deliveries it leased

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    def _deliveries_woken(self) -> None:
        self._deliveries_at = 0.0
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        # Kept: get_running_loop() costs a getpid() system call per call on Python 3.11.
        loop = asyncio.get_running_loop()
        errors = 0
        while True:
            try:
                if self._release_claims:
                    await self._stores.deliveries.release_mine(owner=self._identity)
                    self._release_claims = False
                # Cleared before the claim: a NOTIFY that comes while this batch is published
                # wakes the next round at once instead of being lost to a later clear().
                self._wake.clear()
                claimed = published = await self.relay_once()
                if loop.time() >= self._deliveries_at:
                    # again on a NOTIFY, at the time the next-due query gives, and at the
                    # latest after a poll interval (a busy outbox never starves retries)
                    self._deliveries_at = loop.time() + self._poll_seconds
                    delivered = await self.relay_deliveries_once()
                    if delivered >= self._settings.relay.batch_size:
                        self._deliveries_at = 0.0
                    published = max(published, delivered)
                errors = 0
                if published >= self._settings.relay.batch_size:
                    continue  # more is due: don't wait
                await self._sleep_until_due(loop, claimed_none=claimed == 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database or broker trouble: back off, never die
                await on_connection_error(self._stores.db, exc)
                self._release_claims = True
                self._deliveries_at = 0.0
                errors += 1
                delay = min(MAX_ERROR_BACKOFF_SECONDS, 0.25 * 2 ** min(errors, 8))
                log.warning("relay loop failed, backing off",
                            extra={"error": repr(exc), "retry_in_seconds": delay})
                await asyncio.sleep(delay)

    async def _sleep_until_due(self, loop: asyncio.AbstractEventLoop,
                               claimed_none: bool) -> None:
        if self._wake.is_set():  # rows came meanwhile: claim them, no need to ask when
            return
        timeout = self._poll_seconds
        due = await self._outbox.next_due()
        if due.deliveries is not None:
            self._deliveries_at = min(self._deliveries_at, loop.time() + due.deliveries)
        outbox = due.outbox
        if outbox is not None and claimed_none:
            # messages due that the claim did not get: another relay holds them (publishing)
            outbox = max(outbox, HELD_RETRY_SECONDS)
        for seconds in (outbox, due.deliveries):
            if seconds is not None:
                timeout = max(0.0, min(timeout, seconds))
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    async def relay_once(self) -> int:
        """Publish one batch of due messages of jobs; returns how many were claimed."""
        s = self._settings
        async with self._stores.transaction() as tx:
            rows = await tx.outbox.claim(limit=s.relay.batch_size)
            if not rows:
                return 0
            batch = [messages.encode(r, s.amqp.routing_prefix) for r in rows]
            errors = await self._publish(batch)
            if len(batch) > 1 and any(errors):
                await self._isolate(batch, errors)
            sent = [r.job_id for r, err in zip(rows, errors, strict=True) if err is None]
            if sent:
                await tx.outbox.mark_sent(job_ids=sent)
            set_aside = await self._record_failures(tx, rows, errors, took_some=bool(sent))
        metrics.OUTBOX_PUBLISHED.inc(len(sent))
        for job_id in set_aside:
            metrics.OUTBOX_SET_ASIDE.inc()
            metrics.DLQ_MESSAGES.inc()
            log.error("unpublishable message set aside; its job is dead-lettered",
                      extra={"job_id": str(job_id)})
        return len(rows)

    async def relay_deliveries_once(self) -> int:
        """Publish one batch of due deliveries (their rows are their own outbox)."""
        s = self._settings
        deliveries = self._stores.deliveries
        due = await deliveries.claim(limit=s.relay.batch_size,
                                     lease_seconds=float(s.relay.claim_timeout_seconds),
                                     owner=self._identity)
        if not due:
            return 0
        errors = await self._publish([messages.encode_delivery(d, s.amqp.routing_prefix)
                                      for d in due])
        sent = [(d.id, d.attempt) for d, err in zip(due, errors, strict=True) if err is None]
        if sent:
            await deliveries.mark_queued(attempts=sent)
            metrics.OUTBOX_PUBLISHED.inc(len(sent))
        failed = [d.id for d, err in zip(due, errors, strict=True) if err is not None]
        if failed:  # a delivery message is small and bounded: only a broker outage fails it
            metrics.OUTBOX_PUBLISH_FAILURES.inc(len(failed))
            await deliveries.release(ids=failed, delay_seconds=PUBLISH_RETRY_SECONDS)
            log.warning("delivery publish failed; retried shortly",
                        extra={"count": len(failed), "error": repr(next(e for e in errors if e))})
        return len(due)

    async def _publish(self, batch: list[OutgoingMessage]) -> Errors:
        try:
            return await self._broker.publish(batch)
        except Exception as exc:
            return [exc] * len(batch)

    async def _isolate(self, batch: list[OutgoingMessage], errors: Errors) -> None:
        """A failed batch may hold one message that broke it (and its channel) for all: the
        failed ones go again one at a time, so the rest go through and the culprit is named.
        Stops at the first failure while nothing went through: then the broker is down."""
        took_some = not all(errors)
        for i, (message, error) in enumerate(zip(batch, errors, strict=True)):
            if error is None or isinstance(error, Refused):
                continue
            [errors[i]] = await self._publish([message])
            if errors[i] is None:
                took_some = True
            elif not took_some:
                return

    async def _record_failures(self, tx: Stores, rows: list[OutboxRow], errors: Errors,
                               took_some: bool) -> list[uuid.UUID]:
        """Messages the broker refused while it was up count against their jobs (a job at
        RELAY__MAX_PUBLISH_FAILURES is set aside, dead-lettered: returned); the others, failed
        while the broker was down, are only due again a little later."""
        failed = [(r.job_id, err) for r, err in zip(rows, errors, strict=True)
                  if err is not None]
        if not failed:
            return []
        metrics.OUTBOX_PUBLISH_FAILURES.inc(len(failed))
        log.warning("publish failed; messages due again shortly",
                    extra={"count": len(failed), "error": repr(failed[0][1])})
        counted: list[tuple[uuid.UUID, str]] = []  # refused while the broker was up: theirs
        released: list[uuid.UUID] = []
        for job_id, err in failed:
            if took_some or isinstance(err, Refused):
                counted.append((job_id, repr(err)[:500]))
            else:
                released.append(job_id)
        if released:
            await tx.outbox.release(job_ids=released, delay_seconds=PUBLISH_RETRY_SECONDS)
        if not counted:
            return []
        return await tx.outbox.publish_failed(
            failures=counted, delay_seconds=PUBLISH_RETRY_SECONDS,
            max_failures=self._settings.relay.max_publish_failures)
