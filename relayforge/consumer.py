"""Broker → handler → state transition.

Each message names a job and the attempt it starts. `job_start` moves the job to `processing`
only if that is exactly its next attempt, so a duplicate or late message is acknowledged and
dropped: a succeeded job never runs again and no job moves backwards. The outcome is written
to the database before the message is settled (ack, or reject to the DLQ).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import asyncpg
import orjson
from opentelemetry import trace

from relayforge.broker import Broker, IncomingMessage
from relayforge.connectors.base import DomainEvent
from relayforge.db.pool import on_connection_error
from relayforge.db.queries import Q
from relayforge.jobs import (
    HandlerRegistry,
    JobContext,
    PermanentError,
    apply_test_faults,
    backoff_seconds,
)
from relayforge.observability import logging as log_context
from relayforge.observability import metrics, tracing
from relayforge.settings import Settings

log = logging.getLogger("relayforge.consumer")

OUTCOME_WRITE_TRIES = 6
MAX_ERROR_TEXT = 2000


class JobConsumer:
    def __init__(self, pool: asyncpg.Pool, broker: Broker, settings: Settings,
                 registry: HandlerRegistry) -> None:
        self._pool = pool
        self._broker = broker
        self._settings = settings
        self._registry = registry
        self._slots = asyncio.Semaphore(settings.worker.concurrency)
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._broker.start_consuming(self.handle, self._settings.worker.prefetch)

    async def stop(self, grace_seconds: float) -> None:
        """Stop taking messages, then let the ones in hand finish within the grace period."""
        await self._broker.stop_consuming()
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=grace_seconds)
            for task in pending:  # unfinished: their messages requeue, their leases recover them
                task.cancel()

    async def handle(self, message: IncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            async with self._slots:
                await self._handle(message)
        except Exception as exc:  # database gone mid-message: requeue; the lease recovers the job
            await on_connection_error(self._pool, exc)
            log.exception("message handling failed; released")
            try:
                await message.release()
            except Exception as exc:
                log.warning("release failed", extra={"error": repr(exc)})
        finally:
            self._inflight.discard(task)

    async def _handle(self, message: IncomingMessage) -> None:
        try:
            doc = orjson.loads(message.body)
            job_id = uuid.UUID(doc["job_id"])
            attempt = int(doc["attempt"])
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
            await self._poison(message, f"unreadable message: {exc!r}")
            return
        log_context.job_id.set(str(job_id))
        row = await self._pool.fetchrow(Q["job_start"], job_id, attempt,
                                        float(self._settings.worker.lease_seconds))
        if row is None:
            state = await self._pool.fetchrow(Q["job_state"], job_id)
            if state is None:
                await self._poison(message, "message names an unknown job")
            else:  # a duplicate or late delivery: the job has moved on
                log.info("stale message dropped", extra={
                    "attempt": attempt, "status": state["status"], "attempts": state["attempts"]})
                await message.ack()
            return
        carrier = tracing.bounded({k: str(v) for k, v in message.headers.items()
                                   if k in tracing.W3C_HEADERS})
        with tracing.tracer.start_as_current_span(
            f"job {row['source']}", context=tracing.extract(carrier), kind=trace.SpanKind.CONSUMER,
            attributes={"relayforge.job_id": str(job_id), "relayforge.attempt": row["attempts"]},
        ):
            log_context.trace_id.set(tracing.current_trace_id())
            log_context.correlation_id.set(row["correlation_id"])
            log_context.tenant_id.set(str(row["tenant_id"]))
            await self._run(message, row)

    async def _run(self, message: IncomingMessage, row: asyncpg.Record) -> None:
        attempt, max_attempts = row["attempts"], row["max_attempts"]
        event = DomainEvent.from_json(row["event"])
        ctx = JobContext(row["id"], row["tenant_id"], attempt, max_attempts, event,
                         row["correlation_id"])
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            apply_test_faults(ctx, self._settings)
            handler = self._registry.resolve(event)
            await asyncio.wait_for(handler(ctx), self._settings.worker.job_timeout_seconds)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the handler's failure is the job's outcome, not ours
            error = exc
        metrics.JOB_DURATION.observe(time.perf_counter() - started)

        if error is None:
            await self._write(Q["job_succeed"], row["id"], attempt)
            await message.ack()
            metrics.JOBS_PROCESSED.labels("succeeded").inc()
            log.info("job succeeded", extra={"attempt": attempt})
            return
        reason = _describe(error)
        if isinstance(error, PermanentError) or attempt >= max_attempts:
            await self._write(Q["job_dead_letter"], row["id"], attempt, reason)
            await message.dead_letter()
            metrics.JOBS_PROCESSED.labels("dead_lettered").inc()
            metrics.DLQ_MESSAGES.inc()
            log.warning("job dead-lettered", extra={"attempt": attempt, "error": reason})
            return
        w = self._settings.worker
        delay = backoff_seconds(attempt, w.backoff_base_ms, w.backoff_max_ms)
        headers = orjson.dumps({**tracing.carry({}), "correlation_id": row["correlation_id"]})
        await self._write(Q["job_retry"], row["id"], attempt, reason, delay,
                          self._settings.amqp.routing_prefix, headers.decode())
        await message.ack()
        metrics.JOBS_PROCESSED.labels("retrying").inc()
        metrics.JOB_RETRIES.inc()
        log.info("job will retry", extra={"attempt": attempt, "retry_in_seconds": round(delay, 3),
                                          "error": reason})

    async def _write(self, query: str, *args: object) -> None:
        """Record an outcome, riding out a database blip: the handler already ran, and losing
        its outcome would run it again after the lease expires. Every outcome write is a
        conditional, idempotent statement, so retrying after any error is safe."""
        for n in range(1, OUTCOME_WRITE_TRIES + 1):
            try:
                await self._pool.execute(query, *args)
                return
            except Exception as exc:
                await on_connection_error(self._pool, exc)
                if n == OUTCOME_WRITE_TRIES:
                    raise
                log.warning("outcome write failed, retrying", extra={"error": repr(exc), "try": n})
                await asyncio.sleep(0.1 * 2 ** n)

    async def _poison(self, message: IncomingMessage, why: str) -> None:
        log.error("poison message dead-lettered", extra={
            "error": why, "body": message.body[:200].decode("utf-8", "replace")})
        metrics.DLQ_MESSAGES.inc()
        await message.dead_letter()


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "handler timed out"
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_TEXT]
