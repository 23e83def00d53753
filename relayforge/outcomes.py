"""Recording what a consumed message's work decided, for jobs and deliveries alike.

An outcome is written before its message is settled: `write` rides out a database blip (the
work already ran, and losing its outcome would run it again after the lease expires; every
outcome write is a conditional, idempotent statement, so retrying after any error is safe),
and `settle` acknowledges or dead-letters the message once the outcome is durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from relayforge.db.pool import on_connection_error
from relayforge.stores import Stores

log = logging.getLogger(__name__)

WRITE_TRIES = 6
MAX_ERROR_TEXT = 2000  # of a failure's text kept with a job or a delivery
# Outcomes are written by one statement at a time: those that end while one is written wait
# for the next, together. They are past the work they record (the receiver has its request,
# the handler has run), so the wait delays no one, and a second writer only split them into
# more statements: each is a round trip that costs the consume process and PostgreSQL more
# than its rows do (1.7 times the statements, and half again the PostgreSQL time per
# delivery, in the delivery drain). Starts, on the way to the work, keep two writers.
OUTCOME_WRITERS = 1

Write = Callable[[Callable[[], Awaitable[object]]], Awaitable[None]]


class OutcomeWriter:
    def __init__(self, stores: Stores) -> None:
        self._stores = stores

    async def write(self, write: Callable[[], Awaitable[object]]) -> None:
        """Run one outcome write, again after an error (backing off), up to WRITE_TRIES."""
        for n in range(1, WRITE_TRIES + 1):
            try:
                await write()
                return
            except Exception as exc:
                await on_connection_error(self._stores.db, exc)
                if n == WRITE_TRIES:
                    raise
                log.warning("outcome write failed, retrying", extra={"error": repr(exc), "try": n})
                await asyncio.sleep(0.1 * 2 ** n)


async def settle(settle: Callable[[], Awaitable[None]]) -> None:
    """Settle a message whose outcome is already durable. If the connection dropped meanwhile
    there is nothing to settle: the broker redelivers it, and the conditional start drops the
    duplicate."""
    try:
        await settle()
    except Exception as exc:
        log.warning("outcome recorded; the message could not be settled and will come back as a "
                    "stale duplicate", extra={"error": repr(exc)})
