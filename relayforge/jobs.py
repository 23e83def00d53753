"""The job contract: states, handler errors, the context a handler gets, backoff, and the
handler registry (WORKER__HANDLERS).

A handler is an async callable taking a JobContext. It returns to succeed, raises PermanentError
to dead-letter at once, and raises anything else (or times out) to be retried with backoff until
WORKER__MAX_ATTEMPTS tries are spent.
"""

from __future__ import annotations

import enum
import importlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from relayforge.events import DomainEvent

log = logging.getLogger(__name__)


class JobStatus(enum.StrEnum):
    """A job's states; the jobs table's CHECK holds exactly these (a test compares them).
    Every move between them is a conditional UPDATE in db/sql/queries.sql."""

    PENDING = "pending"  # row written, owing the message of its first attempt
    QUEUED = "queued"  # published
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"  # owes the message of its next attempt, after the backoff
    DEAD_LETTERED = "dead_lettered"


# Not finished yet: what the lag gauges count.
WAITING = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.RETRYING)


class RetryableError(Exception):
    """The attempt failed but may succeed later."""


class PermanentError(Exception):
    """The job can never succeed: dead-letter it now."""


@dataclass(frozen=True, slots=True)
class JobContext:
    job_id: uuid.UUID
    tenant_id: uuid.UUID
    attempt: int  # 1 for the first try
    max_attempts: int
    event: DomainEvent
    correlation_id: str | None


Handler = Callable[[JobContext], Awaitable[None]]


async def record_processed(ctx: JobContext) -> None:
    """The default handler: the event is recorded as processed (the job ends `succeeded`),
    with a line at INFO."""
    if log.isEnabledFor(logging.INFO):
        log.info("event processed", extra={
            "source": ctx.event.source, "event_type": ctx.event.event_type,
            "attempt": ctx.attempt})


def backoff_seconds(attempt: int, base_ms: int, max_ms: int,
                    rng: random.Random | None = None) -> float:
    """Delay before try `attempt + 1`: base doubling per try, capped, with equal jitter (half
    fixed, half random) so retries of a burst spread out."""
    exp = float(min(max_ms, base_ms * (2 ** min(attempt - 1, 30))))
    jitter: float = (rng or random).uniform(0, exp / 2)
    return (exp / 2 + jitter) / 1000


class HandlerRegistry:
    """`source=module:callable` or `source:event_type=module:callable`, separated by `;`."""

    def __init__(self, spec: str) -> None:
        self._by_type: dict[tuple[str, str], Handler] = {}
        self._by_source: dict[str, Handler] = {}
        for item in filter(None, (part.strip() for part in spec.split(";"))):
            key, sep, target = item.partition("=")
            if not sep or ":" not in target:
                raise ValueError(f"WORKER__HANDLERS: {item!r} is not key=module:callable")
            handler = _load(target.strip())
            source, _, event_type = key.strip().lower().partition(":")
            if event_type:
                self._by_type[(source, event_type)] = handler
            else:
                self._by_source[source] = handler

    def resolve(self, event: DomainEvent) -> Handler:
        return (
            self._by_type.get((event.source, event.event_type.lower()))
            or self._by_source.get(event.source)
            or record_processed
        )


def _load(target: str) -> Handler:
    module_name, _, attr = target.partition(":")
    try:
        handler = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"WORKER__HANDLERS: cannot load {target!r}: {exc}") from None
    if not callable(handler):
        raise ValueError(f"WORKER__HANDLERS: {target!r} is not callable")
    return handler  # type: ignore[no-any-return]


def apply_test_faults(ctx: JobContext, enabled: bool) -> None:
    """The generic connector's fault fields, honoured only with WORKER__ENABLE_TEST_FAULTS."""
    if not enabled or not ctx.event.faults:
        return
    if ctx.event.faults.get("force_permanent_fail"):
        raise PermanentError("test fault: force_permanent_fail")
    if ctx.attempt <= int(ctx.event.faults.get("fail_until_attempt", 0)):
        until = ctx.event.faults["fail_until_attempt"]
        raise RetryableError(f"test fault: fail_until_attempt={until}")
