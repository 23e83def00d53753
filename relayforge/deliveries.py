"""A delivery's contract: its states and what one attempt decided. Every delivery state in the
code is one of DeliveryStatus; the deliveries table's CHECK holds exactly these (a test
compares them), and every move between them is a conditional UPDATE in db/sql/queries.sql."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # created by the job's fan-out (or a reprocess), its outbox row written
    QUEUED = "queued"  # published
    PROCESSING = "processing"  # an attempt is under way
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"  # the next attempt is scheduled through the outbox
    DEAD_LETTERED = "dead_lettered"


# Still to be delivered: what the lag gauges and the console count.
WAITING = (DeliveryStatus.PENDING, DeliveryStatus.QUEUED, DeliveryStatus.PROCESSING,
           DeliveryStatus.RETRYING)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an attempt decided: the delivery's next state, why (when it failed), and how long
    until the next attempt (retrying only)."""

    status: DeliveryStatus
    error: str | None = None
    delay_seconds: float = 0.0
