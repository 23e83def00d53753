"""The consumer's side of destinations: fan-out of a job's event, and one delivery attempt.

Fan-out: when a job starts, every enabled destination of its tenant whose filter matches gets a
delivery (once per job and destination, whatever the attempt). The statement that starts the
job says whether its tenant has any enabled destination, so other tenants cost nothing more;
for those that do, their destinations are read then (a change counts from the next job on).

A delivery message goes through the gate first: a disabled destination dead-letters it; an open
circuit, a destination at its `max_concurrency` in this process, or over its
`rate_limit_per_second`, defers it (the same attempt later, none spent). Then the attempt starts
(a conditional transition, as for jobs), the signed POST goes out, and the outcome and its log
entry are written before the message is settled:

    2xx                  succeeded
    410 Gone             dead-lettered; the destination is disabled ("gone") and its waiting
                         deliveries dead-lettered with it
    429/503 Retry-After  retried no sooner than asked
    anything else        retried with backoff until max_attempts, then dead-lettered
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import uuid
from dataclasses import dataclass

import orjson
from opentelemetry import trace

from relayforge.broker import IncomingMessage
from relayforge.deliveries import DeliveryStatus, Outcome
from relayforge.destinations.client import Answer, DeliveryClient
from relayforge.destinations.filters import EventFacts, EventFilter, compile_filter
from relayforge.destinations.signing import header_context, secret_key, signature
from relayforge.events import DomainEvent, without_control
from relayforge.ids import new_id
from relayforge.jobs import backoff_seconds
from relayforge.messages import DeliveryMessage, trace_carrier
from relayforge.observability import metrics, tracing
from relayforge.outcomes import MAX_ERROR_TEXT, Write, settle
from relayforge.security.limits import TokenBucket
from relayforge.security.secrets import SecretCipher
from relayforge.settings import Settings
from relayforge.stores import Stores
from relayforge.stores.destinations import Finished, Gate, StartedDelivery
from relayforge.stores.jobs import StartedJob

log = logging.getLogger(__name__)

MAX_CACHED_FILTERS = 10_000
MIN_BUSY_WAIT_SECONDS, MAX_BUSY_WAIT_SECONDS = 0.05, 30.0  # a destination at max_concurrency


@dataclass(slots=True)
class _Limits:
    """A destination's concurrency and rate in this process, and how long its attempts take
    lately (a busy destination's deliveries wait about two attempts' time: a fast one is
    retried soon, one that hangs until its timeout is not churned through the broker)."""

    max_concurrency: int
    bucket: TokenBucket | None
    in_flight: int = 0
    typical_seconds: float = MIN_BUSY_WAIT_SECONDS

    def take(self) -> float:
        """0 when an attempt may go now (and counts as in flight), else seconds to wait."""
        if self.in_flight >= self.max_concurrency:
            wait = min(MAX_BUSY_WAIT_SECONDS, max(MIN_BUSY_WAIT_SECONDS, 2 * self.typical_seconds))
            return wait * random.uniform(0.75, 1.25)
        wait = self.bucket.take() if self.bucket is not None else 0.0
        if wait:
            return wait
        self.in_flight += 1
        return 0.0

    def done(self, seconds: float) -> None:
        self.in_flight -= 1
        self.typical_seconds = 0.8 * self.typical_seconds + 0.2 * seconds

    def idle(self) -> bool:
        """Nothing in flight and a full bucket: forgetting it loses nothing."""
        return self.in_flight == 0 and (self.bucket is None or self.bucket.is_full(
            time.monotonic()))


class DeliveryWorker:
    def __init__(self, stores: Stores, settings: Settings, cipher: SecretCipher) -> None:
        self._stores = stores
        self._settings = settings
        self._cipher = cipher
        self._client = DeliveryClient(settings.destinations.allow_private_networks,
                                      settings.production)
        self._limits: dict[uuid.UUID, _Limits] = {}
        self._filters: dict[str, EventFilter] = {}  # compiled once per distinct filter

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        await self._client.close()

    # ------------------------------------------------------------------------------ fan-out

    async def fan_out(self, job: StartedJob, event: DomainEvent, carrier: dict[str, str]) -> int:
        """Create the deliveries of a job's event; how many were new."""
        if not job.has_destinations:
            return 0
        destinations = await self._destinations(job.tenant_id)
        facts = EventFacts(job.source, event.event_type, event.data)
        matching = [(new_id(), d) for d, f in destinations if f.matches(facts)]
        if not matching:
            return 0
        headers = orjson.dumps({**tracing.carry(carrier), "correlation_id": job.correlation_id})
        return await self._stores.deliveries.fan_out(
            job_id=job.id, tenant_id=job.tenant_id, deliveries=matching,
            max_attempts=self._settings.worker.max_attempts, headers=headers.decode())

    async def _destinations(self, tenant_id: uuid.UUID) -> list[tuple[uuid.UUID, EventFilter]]:
        compiled = []
        for destination_id, spec in await self._stores.destinations.for_fan_out(
                tenant_id=tenant_id):
            cached = self._filters.get(spec)
            if cached is None:
                if len(self._filters) > MAX_CACHED_FILTERS:
                    self._filters.clear()
                cached = self._filters[spec] = compile_filter(orjson.loads(spec))
            compiled.append((destination_id, cached))
        return compiled

    # ----------------------------------------------------------------------------- delivery

    async def handle(self, message: IncomingMessage, m: DeliveryMessage,
                     write: Write) -> None:
        """`write` records an outcome, riding out a database blip (the consumer's)."""
        s = self._settings.destinations
        gate = await self._stores.destinations.gate(
            destination_id=m.destination_id, probe_seconds=s.circuit_probe_seconds,
            attempt=m.attempt)
        if gate is None:  # the destination was deleted, and its deliveries with it
            await message.ack()
            return
        if not gate.enabled:
            await self._stores.deliveries.refuse(
                delivery_id=m.delivery_id, attempt=m.attempt,
                reason=f"destination disabled: {gate.disabled_reason or 'by an admin'}")
            metrics.child(metrics.DELIVERIES, DeliveryStatus.DEAD_LETTERED).inc()
            await message.dead_letter()
            return
        wait = self._wait(gate, m.destination_id)
        if wait:
            await self._stores.deliveries.defer(
                delivery_id=m.delivery_id, attempt=m.attempt,
                until=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait))
            metrics.child(metrics.DELIVERIES, "deferred").inc()
            await message.ack()
            return
        began = time.monotonic()
        try:
            started = await self._stores.deliveries.start(
                delivery_id=m.delivery_id, attempt=m.attempt,
                lease_seconds=float(self._settings.worker.lease_seconds))
            if started is None:  # a duplicate or late message: the delivery has moved on
                await message.ack()
                return
            await self._attempt(message, started, write)
        finally:
            limits = self._limits[m.destination_id]
            limits.done(time.monotonic() - began)
            if limits.idle():  # the same as a new one: kept only while it holds something
                del self._limits[m.destination_id]

    def _wait(self, gate: Gate, destination_id: uuid.UUID) -> float:
        """0 when the attempt may go now (then it counts as in flight), else seconds to wait."""
        if gate.circuit == "open" and not gate.probe:
            assert gate.wait_until is not None
            return max(0.01, (gate.wait_until - dt.datetime.now(dt.UTC)).total_seconds())
        limits = self._limits.get(destination_id)
        max_concurrency = gate.max_concurrency or self._settings.destinations.max_concurrency
        rate = gate.rate_limit_per_second
        if (limits is None or limits.max_concurrency != max_concurrency
                or (limits.bucket.rate if limits.bucket else None) != rate):
            bucket = TokenBucket(rate, max(1, int(rate))) if rate else None
            limits = _Limits(max_concurrency, bucket, limits.in_flight if limits else 0,
                             limits.typical_seconds if limits else MIN_BUSY_WAIT_SECONDS)
            self._limits[destination_id] = limits
        return limits.take()

    async def _attempt(self, message: IncomingMessage, d: StartedDelivery,
                       write: Write) -> None:
        carrier = trace_carrier(message.headers)
        if not tracing.recording():
            await self._send_and_record(message, d, carrier, write)
            return
        with tracing.tracer.start_as_current_span(
            "deliver", context=tracing.extract(carrier), kind=trace.SpanKind.CLIENT,
            attributes={"relayforge.delivery_id": str(d.id), "relayforge.attempt": d.attempts,
                        "relayforge.destination_id": str(d.destination_id)},
        ) as span:
            outcome = await self._send_and_record(message, d, carrier, write)
            span.set_attribute("http.response.status_code", outcome.status or 0)

    async def _send_and_record(self, message: IncomingMessage, d: StartedDelivery,
                               carrier: dict[str, str],
                               write: Write
                               ) -> Answer:
        started_at = dt.datetime.now(dt.UTC)
        request = self._request(d, carrier)
        if isinstance(request, str):  # nothing to send: no retry can help
            answer = Answer(None, request, None, 0.0, None)
        else:
            url, body, headers = request
            answer = await self._client.post(url, body, headers, d.timeout_ms)
            metrics.DELIVERY_DURATION.observe(answer.duration_ms / 1000)
        outcome = self._outcome(d, answer, permanent=isinstance(request, str))

        finished: list[Finished] = []

        async def record() -> None:
            finished[:] = [await self._stores.deliveries.finish(
                delivery_id=d.id, destination_id=d.destination_id, attempt=d.attempts,
                outcome=outcome, started_at=started_at, duration_ms=answer.duration_ms,
                status_code=answer.status, response_body=answer.body)]

        if outcome.status != DeliveryStatus.SUCCEEDED:  # first: whoever sees this outcome
            await write(lambda: self._update_destination(d, answer))  # sees the destination's
        await write(record)
        if finished and finished[0].recovered:
            log.info("destination recovered; circuit closed",
                     extra={"destination_id": str(d.destination_id)})
        metrics.child(metrics.DELIVERIES, outcome.status).inc()
        if outcome.status == DeliveryStatus.DEAD_LETTERED:
            metrics.DLQ_MESSAGES.inc()
            log.warning("delivery dead-lettered", extra={
                "delivery_id": str(d.id), "attempt": d.attempts, "error": outcome.error})
            await settle(message.dead_letter)
        else:
            await settle(message.ack)
        return answer

    def _outcome(self, d: StartedDelivery, answer: Answer, permanent: bool) -> Outcome:
        if answer.status is not None and 200 <= answer.status < 300:
            return Outcome(DeliveryStatus.SUCCEEDED)
        error = answer.error or f"HTTP {answer.status}"
        if answer.status == 410:
            return Outcome(DeliveryStatus.DEAD_LETTERED,
                           "the destination answered 410 Gone; it is disabled")
        if permanent or d.attempts >= d.max_attempts:
            return Outcome(DeliveryStatus.DEAD_LETTERED, error[:MAX_ERROR_TEXT])
        w = self._settings.worker
        delay = backoff_seconds(d.attempts, w.backoff_base_ms, w.backoff_max_ms)
        if answer.status in (429, 503) and answer.retry_after is not None:
            delay = max(delay, answer.retry_after)
        return Outcome(DeliveryStatus.RETRYING, error[:MAX_ERROR_TEXT], delay)

    async def _update_destination(self, d: StartedDelivery, answer: Answer) -> None:
        """After a failed attempt: 410 disables; else one more consecutive failure."""
        destinations = self._stores.destinations
        s = self._settings.destinations
        if answer.status == 410:
            waiting = await destinations.disable(destination_id=d.destination_id, reason="gone")
            log.warning("destination answered 410 Gone: disabled", extra={
                "destination_id": str(d.destination_id), "dead_lettered": waiting})
            return
        failed = await destinations.failed(
            destination_id=d.destination_id, open_after=s.circuit_failures,
            probe_seconds=s.circuit_probe_seconds, disable_after_hours=s.disable_after_hours)
        if failed is None:
            return
        if failed.failing_too_long:
            waiting = await destinations.disable(destination_id=d.destination_id,
                                                 reason="failing")
            log.warning("destination failing too long: disabled", extra={
                "destination_id": str(d.destination_id), "dead_lettered": waiting})
        elif failed.circuit == "open" and failed.consecutive_failures == s.circuit_failures:
            log.warning("destination circuit opened", extra={
                "destination_id": str(d.destination_id),
                "consecutive_failures": failed.consecutive_failures})

    def _request(self, d: StartedDelivery, carrier: dict[str, str]
                 ) -> tuple[str, bytes, dict[str, str]] | str:
        """The URL, body and headers of the attempt, or why there is nothing to send."""
        context = header_context(d.destination_id)
        keys = [secret_key(self._cipher.decrypt(d.tenant_id, context, nonce, ct).decode())
                for nonce, ct in zip(d.secret_nonces, d.secret_ciphertexts, strict=True)]
        if not keys:
            return "the destination has no signing secret"
        if d.payload == "event":
            body, content_type = d.event, "application/json"
        elif d.body is not None:
            body, content_type = d.body, d.content_type or "application/octet-stream"
        else:
            return "the original body is no longer kept (RETENTION__INBOX_DAYS)"
        headers: dict[str, str] = {}
        if d.headers_ciphertext is not None and d.headers_nonce is not None:
            headers.update(orjson.loads(self._cipher.decrypt(
                d.tenant_id, context, d.headers_nonce, d.headers_ciphertext)))
        timestamp = int(time.time())
        headers.update({
            "content-type": content_type,
            "webhook-id": str(d.id),
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(str(d.id), timestamp, body, keys),
            "x-relayforge-tenant-id": str(d.tenant_id),
            "x-relayforge-source": d.source,
            "x-relayforge-event-type": without_control(d.event_type),
            "x-relayforge-attempt": str(d.attempts),
            **tracing.carry(carrier),  # the trace continues into the tenant's service
        })
        return d.url, body, headers


