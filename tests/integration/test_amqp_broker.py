"""The RabbitMQ adapter against the real broker: a batch of publishes goes out at once, in a
few TCP segments instead of one per message, and arrives whole and in order."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import uuid
from urllib.parse import urlsplit

from relayforge.broker import OutgoingMessage
from relayforge.broker.amqp import AmqpBroker
from relayforge.settings import AmqpSettings
from tests.e2e.pipeline_support import delete_topology, drain_queue
from tests.support import amqp_url


def _ss(*args: str) -> str:
    return subprocess.run(["ss", "-tnH", *args], capture_output=True, text=True,
                          check=True).stdout


def _my_connections(broker_port: int) -> set[str]:
    """Local addresses of this process's TCP connections to the broker."""
    lines = _ss("-p", "state", "established", f"( dport = :{broker_port} )").splitlines()
    return {line.split()[2] for line in lines if f"pid={os.getpid()}," in line}


def _data_segments_sent(local: str) -> int:
    """TCP segments carrying data sent so far from `local` (the kernel's own count)."""
    port = local.rsplit(":", 1)[1]
    out = _ss("-i", "state", "established", f"( sport = :{port} )")
    return int(re.search(r"data_segs_out:(\d+)", out).group(1))  # type: ignore[union-attr]


async def test_a_batch_is_published_in_a_few_writes_and_arrives_whole_in_order() -> None:
    prefix = f"rf.test.broker.{uuid.uuid4().hex[:8]}"
    names = AmqpSettings(url=amqp_url(), exchange=f"{prefix}.events", queue=f"{prefix}.jobs",
                         dlx=f"{prefix}.dlx", dlq=f"{prefix}.dlq")
    broker_port = urlsplit(amqp_url()).port or 5672
    others = _my_connections(broker_port)
    broker = AmqpBroker(amqp_url(), names)
    await broker.connect()
    try:
        [connection] = _my_connections(broker_port) - others
        batch = [OutgoingMessage("job.generic", b"body %d" % i, {"correlation_id": f"c{i}"},
                                 f"message-{i}") for i in range(300)]
        before = _data_segments_sent(connection)
        errors = await broker.publish(batch)
        segments = _data_segments_sent(connection) - before
        assert errors == [None] * len(batch)
        # One segment per message (or more) before the adapter wrote what was waiting
        # together; 300 messages of ~200 bytes fit in a few segments of 64 KiB.
        assert segments < 30, segments
        received = await drain_queue(names.queue)
        assert [(m.body, m.message_id, m.correlation_id, m.headers["correlation_id"])
                for m in received] == [(m.body, m.message_id, m.headers["correlation_id"],
                                        m.headers["correlation_id"]) for m in batch]
        assert {m.delivery_mode for m in received} == {2}  # persistent
    finally:
        await broker.close()
        await delete_topology(prefix)


def _queue_type(name: str) -> str | None:
    """The queue's type as RabbitMQ reports it (`rabbitmqctl`, on the broker's machine)."""
    out = subprocess.run(["rabbitmqctl", "list_queues", "-q", "name", "type", "--formatter",
                          "json"], capture_output=True, text=True, check=True).stdout
    return {q["name"]: q["type"] for q in json.loads(out)}.get(name)


async def test_queues_are_quorum_by_default_and_classic_ones_keep_working(caplog) -> None:
    prefix = f"rf.test.broker.{uuid.uuid4().hex[:8]}"
    names = AmqpSettings(url=amqp_url(), exchange=f"{prefix}.events", queue=f"{prefix}.jobs",
                         dlx=f"{prefix}.dlx", dlq=f"{prefix}.dlq")
    assert names.queue_type == "quorum"
    broker = AmqpBroker(amqp_url(), names)
    await broker.connect()
    try:
        assert _queue_type(names.queue) == "quorum"
        assert _queue_type(names.dlq) == "quorum"
    finally:
        await broker.close()
        await delete_topology(prefix)

    # A deployment whose queues exist as classic (declared before quorum was the default):
    # they are used as they are, with one line saying so, and messages flow.
    prefix = f"rf.test.broker.{uuid.uuid4().hex[:8]}"
    old = AmqpSettings(url=amqp_url(), exchange=f"{prefix}.events", queue=f"{prefix}.jobs",
                       dlx=f"{prefix}.dlx", dlq=f"{prefix}.dlq", queue_type="classic")
    broker = AmqpBroker(amqp_url(), old)
    await broker.connect()
    await broker.close()
    broker = AmqpBroker(amqp_url(), dataclasses.replace(old, queue_type="quorum"))
    try:
        with caplog.at_level(logging.WARNING, logger="relayforge.broker.amqp"):
            await broker.connect()
        warned = [r for r in caplog.records if "another type than AMQP__QUEUE_TYPE" in r.message]
        assert {r.queue for r in warned} == {old.queue, old.dlq}  # type: ignore[attr-defined]
        assert _queue_type(old.queue) == "classic"
        errors = await broker.publish([OutgoingMessage("job.generic", b"still", {}, "m-1")])
        assert errors == [None]
        assert [m.body for m in await drain_queue(old.queue)] == [b"still"]
    finally:
        await broker.close()
        await delete_topology(prefix)
