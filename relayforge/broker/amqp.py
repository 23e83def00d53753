"""RabbitMQ through aio-pika: idempotent topology, persistent mandatory publishes with
pipelined confirms, and a consumer on the jobs queue whose rejects go DLX → DLQ."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

import aio_pika
import aiormq
import aiormq.abc
import aiormq.connection
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from relayforge.broker import Consumer, OutgoingMessage, Refused
from relayforge.settings import AmqpSettings

if TYPE_CHECKING:
    from pamqp.common import FieldTable

log = logging.getLogger(__name__)

PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)


class _FramesSentTogether:
    """Frames that were waiting for the writer at the same moment, as one write."""

    __slots__ = ("_frames", "payload", "should_close")

    def __init__(self, frames: list[aiormq.abc.ChannelFrame]) -> None:
        self._frames = frames
        self.payload = b"".join(f.payload for f in frames)
        self.should_close = frames[-1].should_close

    @property
    def should_drain(self) -> bool:
        return any(f.should_drain for f in self._frames)

    def drain(self) -> None:
        for f in self._frames:
            f.drain()


class _CoalescingFrames(aiormq.connection.FrameGenerator):
    """aiormq's writer task sends each queued frame with a write of its own: a system call and
    a wake-up of RabbitMQ per publish and per ack. The frames already waiting when it takes
    one go with it, in order, up to a connection close (after which nothing may be sent)."""

    async def __anext__(self) -> aiormq.abc.ChannelFrame:
        frame = await super().__anext__()
        if self.queue.empty() or frame.should_close:
            return frame
        frames = [frame]
        while not self.queue.empty() and not frames[-1].should_close:
            frames.append(self.queue.get_nowait())
            self.queue.task_done()
        return _FramesSentTogether(frames)  # type: ignore[return-value]  # same interface


# The writer looks the class up by this name each time a connection starts. Its queue holds
# 10 frames by default: a batch of publishes would wait for room and go out one by one.
aiormq.connection.FrameGenerator = _CoalescingFrames  # type: ignore[misc]
aiormq.connection.Connection.FRAME_BUFFER_SIZE = 1024


class AmqpIncoming:
    __slots__ = ("_message", "body", "headers")

    def __init__(self, message: AbstractIncomingMessage) -> None:
        self._message = message
        self.body = message.body
        self.headers: dict[str, object] = dict(message.headers or {})

    async def ack(self) -> None:
        await self._message.ack()

    async def dead_letter(self) -> None:
        await self._message.reject(requeue=False)

    async def release(self) -> None:
        await self._message.nack(requeue=True)


class AmqpBroker:
    name = "rabbitmq"

    def __init__(self, url: str, names: AmqpSettings, connection_name: str = "relayforge") -> None:
        self._url = url
        self._names = names
        self._connection_name = connection_name
        self._handling: set[asyncio.Future[None]] = set()  # held: asyncio keeps weak refs
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._consume_channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": self._connection_name}
        )
        await self._open_publish_channel()

    async def _open_publish_channel(self) -> AbstractChannel:
        """A channel with confirms; re-opened after any channel error (a frame error, a closed
        channel), so one failed publish never leaves the relay publishing into a dead channel.
        Kept only once the topology is declared on it: until then the next publish opens one."""
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        await self._declare(channel)
        self._publish_channel = channel
        return channel

    async def _declare(self, channel: AbstractChannel) -> AbstractQueue:
        """Exchange, jobs queue, DLX and DLQ; declaring twice with the same arguments is a no-op."""
        n = self._names
        exchange = await channel.declare_exchange(n.exchange, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        dlx = await channel.declare_exchange(n.dlx, aio_pika.ExchangeType.DIRECT, durable=True)
        kind = {"x-queue-type": n.queue_type}
        # The DLQ keeps the newest AMQP__DLQ_MAX_LENGTH messages.
        await self._declare_queue(n.dlq, kind | {
            "x-max-length": n.dlq_max_length, "x-overflow": "drop-head"})
        await self._declare_queue(n.queue, kind | {
            "x-dead-letter-exchange": n.dlx, "x-dead-letter-routing-key": n.dlq})
        dlq = await channel.declare_queue(n.dlq, passive=True)
        await dlq.bind(dlx, routing_key=n.dlq)
        queue = await channel.declare_queue(n.queue, passive=True)
        await queue.bind(exchange, routing_key=f"{n.routing_prefix}.*")
        return queue

    async def _declare_queue(self, name: str, arguments: dict[str, Any]) -> None:
        """Declare a queue as this configuration wants it. One declared before with other
        arguments (classic, before quorum was the default; a DLQ from before its length bound)
        can't be redeclared (RabbitMQ refuses changed arguments): it is used as it is, with
        one warning saying what differs, on a channel of its own that the refusal closes."""
        assert self._connection is not None
        channel = await self._connection.channel()
        try:
            await channel.declare_queue(name, durable=True, arguments=arguments)
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            if "x-queue-type" in str(exc):
                log.warning(
                    "the queue exists as another type than AMQP__QUEUE_TYPE; it is used as it "
                    "is (the README's Scaling section says how to switch)",
                    extra={"queue": name, "wanted": arguments["x-queue-type"]})
            else:
                log.warning(
                    "the queue exists with other arguments; it is used as it is (a DLQ without "
                    "its length bound: bound it with a policy, see README, or re-create it)",
                    extra={"queue": name, "refusal": str(exc)})
        finally:
            if not channel.is_closed:
                await channel.close()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def publish(self, messages: list[OutgoingMessage], exchange: str | None = None,
                      routing_key: str | None = None) -> list[BaseException | None]:
        if self._connection is None or self._connection.is_closed:
            raise ConnectionError("not connected to RabbitMQ")
        publish_channel = self._publish_channel
        if publish_channel is None or publish_channel.is_closed:
            log.warning("publish channel closed; re-opening it")
            publish_channel = await self._open_publish_channel()
        channel = cast(aiormq.Channel, await publish_channel.get_underlay_channel())

        async def one(m: OutgoingMessage) -> None:
            try:
                await self._publish_one(channel, m, exchange, routing_key)
            except aio_pika.exceptions.DeliveryError as exc:  # returned or nacked: this message
                raise Refused(repr(exc)) from exc

        # All in flight at once: confirms come back pipelined, not one round trip each.
        results = await asyncio.gather(*(one(m) for m in messages), return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    async def dead_letter(self, message: OutgoingMessage) -> None:
        """As the queue's own dead-lettering does: to the DLX, keyed for the DLQ."""
        errors = await self.publish([message], exchange=self._names.dlx,
                                    routing_key=self._names.dlq)
        if errors[0] is not None:
            raise errors[0]

    async def _publish_one(self, channel: aiormq.Channel, m: OutgoingMessage,
                           exchange: str | None, routing_key: str | None) -> None:
        # Straight to the channel, without waiting for each frame to be written: aio-pika's
        # publish holds the channel's lock until the writer task has sent the frame, so a batch
        # went out one message per event-loop round (1-2 ms each under load), not at once.
        # What waits to be written stays bounded: each message still awaits its confirm, and
        # the relay publishes its next batch only once this one is confirmed.
        await channel.basic_publish(
            m.body, exchange=exchange or self._names.exchange,
            routing_key=routing_key or m.routing_key,
            properties=aiormq.spec.Basic.Properties(
                content_type="application/json", delivery_mode=PERSISTENT,
                headers=cast("FieldTable", m.headers),
                message_id=m.message_id, correlation_id=m.headers.get("correlation_id")),
            mandatory=True, timeout=30, wait=False,
        )

    async def start_consuming(self, consumer: Consumer, prefetch: int) -> None:
        assert self._connection is not None
        self._consume_channel = await self._connection.channel()
        await self._consume_channel.set_qos(prefetch_count=prefetch)
        self._queue = await self._declare(self._consume_channel)

        async def on_message(message: AbstractIncomingMessage) -> None:
            # The handler runs in a task of its own: when the connection drops, aio-pika cancels
            # this callback, but a handler in hand finishes and records its outcome (its message
            # comes back after the reconnect as a stale duplicate, which is dropped).
            task: asyncio.Future[None] = asyncio.ensure_future(consumer(AmqpIncoming(message)))
            self._handling.add(task)
            task.add_done_callback(self._handling.discard)
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    log.warning("broker connection lost while a job ran; it finishes and records "
                                "its outcome, the broker redelivers its message")
                raise

        self._consumer_tag = await self._queue.consume(on_message)

    async def stop_consuming(self) -> None:
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await self._queue.cancel(self._consumer_tag)
            except Exception as exc:  # the channel may already be gone; unacked ones requeue
                log.warning("consumer cancel failed", extra={"error": repr(exc)})
            self._consumer_tag = None

    async def check(self) -> None:
        if self._connection is None or self._connection.is_closed:
            raise ConnectionError("RabbitMQ connection is closed")
        if self._publish_channel is None or self._publish_channel.is_closed:
            # re-opened here as the next publish would: a process whose jobs begin at ingest
            # may publish nothing for a long time
            await self._open_publish_channel()

    async def depths(self) -> dict[str, int]:
        """Passive declares on a channel of their own: a missing queue closes only that one."""
        if self._connection is None or self._connection.is_closed:
            raise ConnectionError("not connected to RabbitMQ")
        channel = await self._connection.channel()
        try:
            counts = {}
            for key, name in (("jobs", self._names.queue), ("dlq", self._names.dlq)):
                queue = await channel.declare_queue(name, passive=True)
                counts[key] = queue.declaration_result.message_count or 0
            return counts
        finally:
            if not channel.is_closed:
                await channel.close()
