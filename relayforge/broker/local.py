"""The in-process broker of mode `all` without AMQP__URL: an asyncio queue in place of RabbitMQ,
behind the same interface. Messages live only in memory; on start every job that was waiting on
one owes it again (see Runtime), so a restart loses nothing."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from relayforge.broker import Consumer, OutgoingMessage

log = logging.getLogger(__name__)
DEAD_LETTERS_KEPT = 10_000


class LocalIncoming:
    __slots__ = ("_broker", "body", "headers", "_message")

    def __init__(self, broker: LocalBroker, message: OutgoingMessage) -> None:
        self._broker = broker
        self._message = message
        self.body = message.body
        self.headers: dict[str, object] = dict(message.headers)

    async def ack(self) -> None:
        return None

    async def dead_letter(self) -> None:
        self._broker.dead_letters.append(self._message)

    async def release(self) -> None:
        self._broker._queue.put_nowait(self._message)


class LocalBroker:
    name = "in-process"

    def __init__(self) -> None:
        self._queue: asyncio.Queue[OutgoingMessage] = asyncio.Queue()
        self.dead_letters: deque[OutgoingMessage] = deque(maxlen=DEAD_LETTERS_KEPT)
        self._task: asyncio.Task[None] | None = None
        # asyncio keeps only weak references to tasks: hold running ones until they finish
        self._inflight: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        await self.stop_consuming()

    async def publish(self, messages: list[OutgoingMessage]) -> list[BaseException | None]:
        for m in messages:
            self._queue.put_nowait(m)
        return [None] * len(messages)

    async def dead_letter(self, message: OutgoingMessage) -> None:
        self.dead_letters.append(message)

    async def start_consuming(self, consumer: Consumer, prefetch: int) -> None:
        slots = asyncio.Semaphore(prefetch)

        async def run(incoming: LocalIncoming) -> None:
            try:
                await consumer(incoming)
            finally:
                slots.release()

        async def loop() -> None:
            while True:
                await slots.acquire()
                message = await self._queue.get()
                task = asyncio.create_task(run(LocalIncoming(self, message)))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

        self._task = asyncio.create_task(loop(), name="local-broker-consumer")

    async def stop_consuming(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def check(self) -> None:
        return None

    async def depths(self) -> dict[str, int]:
        return {"jobs": self._queue.qsize(), "dlq": len(self.dead_letters)}
