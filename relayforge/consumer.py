"""Broker → handler → state transition.

`Consumer` takes the broker's messages, each in one of WORKER__CONCURRENCY slots, and hands
each to what it names: a job's attempt to `JobRunner`, a delivery's attempt to its
destination's lane in the DeliveryWorker (which also takes the deliveries a job fans out).

Each job message names a job and the attempt it starts. `job_start` moves the job to `processing`
only if that is exactly its next attempt, so a duplicate or late message is acknowledged and
dropped: a succeeded job never runs again and no job moves backwards. The outcome is written
to the database before the message is settled (ack, or reject to the DLQ).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from opentelemetry import trace

from relayforge import messages
from relayforge.batcher import GroupCommitBatcher
from relayforge.broker import Broker, IncomingMessage
from relayforge.db.pool import on_connection_error
from relayforge.destinations.worker import DeliveryWorker
from relayforge.jobs import (
    HandlerRegistry,
    JobContext,
    JobStatus,
    PermanentError,
    apply_test_faults,
    backoff_seconds,
)
from relayforge.observability import logging as log_context
from relayforge.observability import metrics, tracing
from relayforge.outcomes import MAX_ERROR_TEXT, OUTCOME_WRITERS, OutcomeWriter, settle
from relayforge.settings import Settings
from relayforge.stores import Stores
from relayforge.stores.jobs import StartedJob
from relayforge.stores.outbox import OutboxRow

log = logging.getLogger(__name__)

START_WRITERS = 2  # (outcomes: OUTCOME_WRITERS)


@dataclass(slots=True, eq=False)
class _Attempt:
    """A message's (job, attempt) on its way through a batched write; `job` once started."""

    job_id: uuid.UUID
    attempt: int
    job: StartedJob | None = None


class Consumer:
    """The dispatcher: slots, messages in hand, and who handles each kind of message."""

    def __init__(self, stores: Stores, broker: Broker, settings: Settings,
                 registry: HandlerRegistry, deliveries: DeliveryWorker) -> None:
        self._stores = stores
        self._broker = broker
        self._settings = settings
        self._outcomes = OutcomeWriter(stores)
        self._deliveries = deliveries
        self._jobs = JobRunner(stores, broker, settings, registry, deliveries,
                               self._outcomes)
        self._slots = asyncio.Semaphore(settings.worker.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        await self._deliveries.start()
        self._jobs.start()
        await self._broker.start_consuming(self.handle, self._settings.worker.prefetch)

    async def stop(self, grace_seconds: float) -> None:
        """Stop taking messages, then let the ones in hand finish within the grace period."""
        self._stopping = True
        await self._broker.stop_consuming()
        log.info("draining", extra={"jobs": len(self._inflight),
                                    "deliveries": self._deliveries.under_way(),
                                    "grace_seconds": grace_seconds})
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=grace_seconds)
            for task in pending:  # unfinished: their messages requeue, their leases recover them
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._jobs.close()
        await self._deliveries.close(grace_seconds)

    # HandOff (ingest/writer.py): the jobs this process's ingest began, run in the same slots.

    async def reserve(self, wanted: int) -> int:
        """Free slots, taken now; none while messages wait for one (they came first), while
        stopping, or while outcomes lag (as a message would wait, a job started now would)."""
        taken = 0
        if self._stopping or self._jobs.lagging():
            return 0
        while taken < wanted and not self._slots.locked():
            await self._slots.acquire()  # free: returns at once
            taken += 1
        return taken

    def release(self, slots: int) -> None:
        for _ in range(slots):
            self._slots.release()

    def run(self, job: StartedJob) -> None:
        task = asyncio.create_task(self._run_started(job))
        self._inflight.add(task)

    async def _run_started(self, job: StartedJob) -> None:
        metrics.JOBS_IN_FLIGHT.inc()
        try:
            await self._jobs.run_started(job)
        except Exception as exc:  # database gone mid-job: its lease recovers it
            await on_connection_error(self._stores.db, exc)
            log.exception("job begun at ingest failed to finish; its lease recovers it")
        finally:
            self._slots.release()
            self._inflight.discard(asyncio.current_task())
            metrics.JOBS_IN_FLIGHT.dec()

    async def handle(self, message: IncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        metrics.JOBS_IN_FLIGHT.inc()
        try:
            async with self._slots:
                await self._dispatch(message)
        except Exception as exc:  # database gone mid-message: requeue; the lease recovers the job
            await on_connection_error(self._stores.db, exc)
            log.exception("message handling failed; released")
            try:
                await message.release()
            except Exception as exc:
                log.warning("release failed", extra={"error": repr(exc)})
        finally:
            self._inflight.discard(task)
            metrics.JOBS_IN_FLIGHT.dec()

    async def _dispatch(self, message: IncomingMessage) -> None:
        try:
            decoded = messages.decode(message.body)
        except messages.UnreadableMessage as exc:
            await poison(message, str(exc))
            return
        if isinstance(decoded, messages.DeliveryMessage):
            log_context.job_id.set(None)
            await self._deliveries.handle(message, decoded)
        else:
            await self._jobs.handle(message, decoded)


class JobRunner:
    """A job's attempt: start it (conditionally), fan out its deliveries, run its handler,
    record the outcome, settle the message."""

    def __init__(self, stores: Stores, broker: Broker, settings: Settings,
                 registry: HandlerRegistry, deliveries: DeliveryWorker,
                 outcomes: OutcomeWriter) -> None:
        self._jobs = stores.jobs
        self._broker = broker
        self._settings = settings
        self._registry = registry
        self._deliveries = deliveries
        self._outcomes = outcomes
        # Group commit, as at ingest: the starts and successes of messages in hand at the same
        # moment are written by one statement each; a message is settled only after its write.
        size = max(settings.worker.prefetch, 1)
        self._starts = GroupCommitBatcher(self._start_batch, max_size=size, writers=START_WRITERS)
        self._successes = GroupCommitBatcher(self._succeed_batch, max_size=size,
                                             writers=OUTCOME_WRITERS)
        # Handlers finished whose outcome is not yet committed, oldest first: token -> end time.
        self._unwritten: dict[object, float] = {}
        self._written = asyncio.Event()
        self._max_lag = settings.worker.max_outcome_lag_ms / 1000

    def start(self) -> None:
        self._starts.start()
        self._successes.start()

    async def close(self) -> None:
        await self._starts.close()
        await self._successes.close()

    async def _start_batch(self, batch: list[_Attempt]) -> None:
        started = await self._jobs.start_many(
            attempts=[(a.job_id, a.attempt) for a in batch],
            lease_seconds=float(self._settings.worker.lease_seconds))
        by_attempt = {(job.id, job.attempts): job for job in started}
        for a in batch:  # a duplicate message within the batch finds its job taken: stale
            a.job = by_attempt.pop((a.job_id, a.attempt), None)

    async def _succeed_batch(self, batch: list[_Attempt]) -> None:
        succeeded = await self._jobs.succeed_many(attempts=[(a.job_id, a.attempt) for a in batch])
        for seconds in succeeded.values():
            metrics.JOB_END_TO_END.observe(seconds)

    async def handle(self, message: IncomingMessage, job_message: messages.JobMessage) -> None:
        log_context.job_id.set(str(job_message.job_id))
        await self._outcomes_caught_up()
        start = _Attempt(job_message.job_id, job_message.attempt)
        await self._starts.submit(start)
        job = start.job
        if job is None:
            state = await self._jobs.state(job_id=job_message.job_id)
            if state is None:
                await poison(message, "message names an unknown job")
            else:  # a duplicate or late delivery: the job has moved on
                log.info("stale message dropped", extra={
                    "attempt": job_message.attempt, "status": state.status,
                    "attempts": state.attempts})
                await message.ack()
            return
        await self._begin(message, job, messages.trace_carrier(message.headers))

    async def run_started(self, job: StartedJob) -> None:
        """A job whose first attempt began at ingest, in this process: no message to settle
        (a dead-lettered one is put into the DLQ as its message would have been)."""
        log_context.job_id.set(str(job.id))
        carried = orjson.loads(job.trace_context)
        await self._begin(_StartedHere(self._broker, job, carried,
                                       self._settings.amqp.routing_prefix), job,
                          messages.trace_carrier(carried))

    def lagging(self) -> bool:
        """Whether the oldest outcome not yet written is older than WORKER__MAX_OUTCOME_LAG_MS."""
        return bool(self._unwritten) and (
            time.monotonic() - next(iter(self._unwritten.values())) > self._max_lag)

    async def _begin(self, message: IncomingMessage, job: StartedJob,
                     carrier: dict[str, str]) -> None:
        log_context.correlation_id.set(job.correlation_id)
        log_context.tenant_id.set(str(job.tenant_id))
        if not tracing.recording():  # no span objects per job; logs keep the trace id
            log_context.trace_id.set(tracing.incoming_trace_id(carrier))
            await self._run(message, job, carrier)
            return
        with tracing.tracer.start_as_current_span(
            f"job {job.source}", context=tracing.extract(carrier), kind=trace.SpanKind.CONSUMER,
            attributes={"relayforge.job_id": str(job.id), "relayforge.attempt": job.attempts},
        ):
            log_context.trace_id.set(tracing.current_trace_id())
            await self._run(message, job, carrier)

    async def _run(self, message: IncomingMessage, job: StartedJob,
                   carrier: dict[str, str]) -> None:
        attempt, max_attempts = job.attempts, job.max_attempts
        event = job.event
        # The event's deliveries, before its handler runs: a handler's failure never holds
        # them back, and a later attempt finds them made (once per job and destination).
        await self._outcomes.write(lambda: self._deliveries.fan_out(job, event, carrier))
        ctx = JobContext(job.id, job.tenant_id, attempt, max_attempts, event, job.correlation_id)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            apply_test_faults(ctx, self._settings.worker.enable_test_faults)
            handler = self._registry.resolve(event)
            async with asyncio.timeout(self._settings.worker.job_timeout_seconds):
                await handler(ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the handler's failure is the job's outcome, not ours
            error = exc
        metrics.JOB_DURATION.observe(time.perf_counter() - started)

        if error is None:
            await self._outcome(lambda: self._successes.submit(_Attempt(job.id, attempt)))
            await settle(message.ack)
            metrics.child(metrics.JOBS_PROCESSED, JobStatus.SUCCEEDED).inc()
            if log.isEnabledFor(logging.DEBUG):  # the counters carry the rate
                log.debug("job succeeded", extra={"attempt": attempt})
            return
        reason = _describe(error)
        if isinstance(error, PermanentError) or attempt >= max_attempts:
            await self._outcome(lambda: self._jobs.dead_letter(job_id=job.id, attempt=attempt,
                                                               error=reason))
            await settle(message.dead_letter)
            metrics.child(metrics.JOBS_PROCESSED, JobStatus.DEAD_LETTERED).inc()
            metrics.DLQ_MESSAGES.inc()
            log.warning("job dead-lettered", extra={"attempt": attempt, "error": reason},
                        exc_info=error)
            return
        w = self._settings.worker
        delay = backoff_seconds(attempt, w.backoff_base_ms, w.backoff_max_ms)
        # The next attempt continues this trace: this span's context, else the incoming one.
        trace_context = orjson.dumps(tracing.carry(carrier)).decode()
        await self._outcome(lambda: self._jobs.retry(job_id=job.id, attempt=attempt,
                                                     error=reason, delay_seconds=delay,
                                                     trace_context=trace_context))
        await settle(message.ack)
        metrics.child(metrics.JOBS_PROCESSED, JobStatus.RETRYING).inc()
        metrics.JOB_RETRIES.inc()
        log.info("job will retry", extra={"attempt": attempt, "retry_in_seconds": round(delay, 3),
                                          "error": reason}, exc_info=error)

    async def _outcomes_caught_up(self) -> None:
        """Wait while the oldest outcome not yet written is older than
        WORKER__MAX_OUTCOME_LAG_MS (the database is slow or away): a handler started now could
        finish with no chance of its outcome being recorded, and a kill would repeat it."""
        while self.lagging():
            self._written.clear()
            await self._written.wait()  # set whenever an outcome is written (or given up)

    async def _outcome(self, write: Callable[[], Awaitable[object]]) -> None:
        """Write a finished handler's outcome, counting the time it takes (the window in which
        a kill would run the handler again)."""
        token = object()
        ended = self._unwritten[token] = time.monotonic()
        metrics.OUTCOMES_UNWRITTEN.inc()
        try:
            await self._outcomes.write(write)
        finally:
            del self._unwritten[token]
            metrics.OUTCOMES_UNWRITTEN.dec()
            self._written.set()
        metrics.OUTCOME_LAG.observe(time.monotonic() - ended)


class _StartedHere:
    """The IncomingMessage of a job begun at ingest: there is none to settle; dead-lettered,
    its message goes to the DLQ as the queue would have put it there."""

    __slots__ = ("_broker", "_job", "_routing_prefix", "body", "headers")

    def __init__(self, broker: Broker, job: StartedJob, carried: dict[str, object],
                 routing_prefix: str) -> None:
        self._broker = broker
        self._job = job
        self._routing_prefix = routing_prefix
        self.body = b""
        self.headers = carried

    async def ack(self) -> None:
        return None

    async def dead_letter(self) -> None:
        job = self._job
        carried = dict(self.headers, correlation_id=job.correlation_id) \
            if job.correlation_id else self.headers
        try:
            await self._broker.dead_letter(messages.encode(
                OutboxRow(job.id, job.tenant_id, job.source, job.attempts,
                          orjson.dumps(carried).decode()), self._routing_prefix))
        except Exception as exc:  # the database holds the dead letter either way
            log.warning("job dead-lettered; its message could not be put into the DLQ",
                        extra={"error": repr(exc)})

    async def release(self) -> None:
        return None  # the job is leased: the lease brings it back


async def poison(message: IncomingMessage, why: str) -> None:
    """A message no one can act on: dead-lettered, and said so."""
    log.error("poison message dead-lettered", extra={
        "error": why, "body": message.body[:200].decode("utf-8", "replace")})
    metrics.DLQ_MESSAGES.inc()
    await message.dead_letter()


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "handler timed out"
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_TEXT]
