"""Message brokers behind one small interface: RabbitMQ (amqp.py) or in-process (local.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


class Refused(Exception):
    """The broker was up and refused this one message (returned unroutable, or nacked)."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    routing_key: str
    body: bytes
    headers: dict[str, str]
    message_id: str


class IncomingMessage(Protocol):
    body: bytes
    headers: dict[str, object]

    async def ack(self) -> None: ...

    async def dead_letter(self) -> None:
        """Reject without requeue: the broker routes it to the DLQ."""

    async def release(self) -> None:
        """Give it back to the queue (shutdown, or work not done)."""


Consumer = Callable[[IncomingMessage], Awaitable[None]]


class Broker(Protocol):
    name: str

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, messages: list[OutgoingMessage]) -> list[BaseException | None]:
        """Publish all, confirmed; per message None or the error that refused it (`Refused`
        when the broker refused that message itself). A broken channel is re-opened on the
        next call."""

    async def dead_letter(self, message: OutgoingMessage) -> None:
        """Put a message that never went through the queue straight into the DLQ (a job that
        began at ingest and was dead-lettered), confirmed."""

    async def start_consuming(self, consumer: Consumer, prefetch: int) -> None: ...

    async def stop_consuming(self) -> None: ...

    async def check(self) -> None:
        """Raise unless the broker is reachable (readiness)."""

    async def depths(self) -> dict[str, int]:
        """Messages ready in the jobs queue and the DLQ: {"jobs": n, "dlq": n}."""
