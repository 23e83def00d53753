"""Helpers for the pipeline tests: unique RabbitMQ topology names, waiting for terminal jobs."""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import asyncpg
import httpx
import orjson

from tests.support import Server, amqp_url, new_tenant, sign_generic


def counter(metrics: str, name: str) -> float:
    """A counter's value in a /metrics text (0 before its first increment)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def amqp_env(prefix: str) -> dict[str, str]:
    return {
        "AMQP__URL": amqp_url(), "AMQP__EXCHANGE": f"{prefix}.events",
        "AMQP__QUEUE": f"{prefix}.jobs", "AMQP__DLX": f"{prefix}.dlx", "AMQP__DLQ": f"{prefix}.dlq",
    }


FAST = {
    "WORKER__BACKOFF_BASE_MS": "20", "WORKER__BACKOFF_MAX_MS": "200",
    "RELAY__POLL_INTERVAL_MS": "200",
}


async def delete_topology(prefix: str) -> None:
    connection = await aio_pika.connect(amqp_url())
    async with connection:
        channel = await connection.channel()
        for queue in (f"{prefix}.jobs", f"{prefix}.dlq"):
            await channel.queue_delete(queue)
        for exchange in (f"{prefix}.events", f"{prefix}.dlx"):
            await channel.exchange_delete(exchange)


async def drain_queue(queue_name: str,
                      timeout: float = 3.0) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(amqp_url())
    out = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = await queue.get(fail=False)
            if message is None:
                if out:
                    break
                await asyncio.sleep(0.1)
                continue
            await message.ack()
            out.append(message)
    return out


async def publish_raw(prefix: str, routing_key: str, body: bytes,
                      headers: dict | None = None) -> None:
    connection = await aio_pika.connect(amqp_url())
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(f"{prefix}.events")
        await exchange.publish(aio_pika.Message(body, headers=headers or {}),
                               routing_key=routing_key)


async def send(client: httpx.AsyncClient, server: Server, tenant: str | None = None,
               **fields: object) -> dict:
    body = orjson.dumps({"event": "test.event", "data": {"n": uuid.uuid4().hex}, **fields})
    r = await client.post(f"{server.url}/webhooks/generic", content=body, headers={
        "X-Signature": sign_generic(body), "X-Tenant-Id": tenant or new_tenant()})
    assert r.status_code == 202, r.text
    return r.json()


async def wait_for_jobs(database_url: str, job_ids: list[str], statuses: tuple[str, ...] = (
        "succeeded", "dead_lettered"), timeout: float = 60.0) -> list[asyncpg.Record]:
    """Poll until every job is in one of `statuses`; return their rows."""
    conn = await asyncpg.connect(database_url)
    ids = [uuid.UUID(j) for j in job_ids]
    try:
        deadline = time.monotonic() + timeout
        while True:
            rows = await conn.fetch("SELECT * FROM jobs WHERE id = ANY($1::uuid[])", ids)
            if len(rows) == len(ids) and all(r["status"] in statuses for r in rows):
                return rows
            if time.monotonic() > deadline:
                states = sorted((r["status"], r["attempts"]) for r in rows)
                raise AssertionError(f"jobs not terminal after {timeout}s: {states[:20]}")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def wait_for_shares(database_url: str, kind: str, count: int) -> None:
    """Until `count` processes of the kind hold a lease, and each has renewed since (so each
    enforces its share)."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + 20
        while await conn.fetchval("SELECT count(*) FROM process_leases WHERE kind = $1 "
                                  "AND expires_at > now()", kind) != count:
            assert time.monotonic() < deadline, "the processes did not all take a lease"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    await asyncio.sleep(1.5)  # one renewal each: every process has seen the others
