"""Pipeline drain: jobs/s from outbox to `succeeded`, next to a bare aio-pika loop.

    .venv/bin/python bench/pipeline_drain.py                 # 20,000 jobs, chart in bench/out/
    .venv/bin/python bench/pipeline_drain.py --jobs 5000

Relayforge: JOBS webhooks are recorded by an ingest-only process; then one `relay` and one
`consume` process start (default handler, default settings) and the figure is the jobs/s from the
first success to the last, read from the database. Baseline, in the same run and over the same
RabbitMQ: a bare aio-pika publisher process (publisher confirms, 500 in flight) and consumer
process (prefetch 64, ack each), the same number of messages, first ack to last.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import (
    ROOT,
    SECRET,
    Servers,
    broker_topology,
    chart,
    database,
    progress,
    report,
    unique,
)

OUT = ROOT / "bench" / "out"


async def fill(url: str, jobs: int, body_bytes: int = 0, tenant: str | None = None) -> None:
    """Record `jobs` signed generic webhooks, 64 at a time; bodies padded to `body_bytes`; for
    `tenant` (else the default tenant)."""
    import httpx

    done = 0

    async def worker(client: httpx.AsyncClient, n: int) -> None:
        nonlocal done
        for _ in range(n):
            body = b'{"event":"bench.drain","data":{"id":"%s"}}' % uuid.uuid4().hex.encode()
            if len(body) < body_bytes:
                body = body[:-2] + b',"pad":"%s"}}' % (b"x" * (body_bytes - len(body) - 9))
            sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            headers = {"X-Signature": sig, **({"X-Tenant-Id": tenant} if tenant else {})}
            r = await client.post(f"{url}/webhooks/generic", content=body, headers=headers)
            assert r.status_code == 202, r.text
            done += 1
            if done % 500 == 0:
                progress("recording webhooks", done, jobs)

    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        share = [jobs // 64 + (1 if i < jobs % 64 else 0) for i in range(64)]
        await asyncio.gather(*(worker(client, n) for n in share))
    progress("recording webhooks", jobs, jobs)


async def watch(database_url: str, jobs: int,
                timeout: float) -> tuple[float, list[tuple[float, int]]]:
    """Poll until every job succeeded; (jobs/s first to last success, the drain over time)."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    started = time.monotonic()
    series: list[tuple[float, int]] = []
    try:
        while time.monotonic() - started < timeout:
            done = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
            series.append((time.monotonic() - started, done))
            progress("draining (relayforge)", done, jobs)
            if done >= jobs:
                break
            await asyncio.sleep(0.25)
        first, last = await conn.fetchrow(
            "SELECT min(updated_at), max(updated_at) FROM jobs WHERE status = 'succeeded'")
        count = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
    finally:
        await conn.close()
    if count < jobs:
        raise SystemExit(f"only {count} of {jobs} jobs succeeded within {timeout:.0f}s")
    return count / max((last - first).total_seconds(), 1e-6), series


def relayforge_drain(jobs: int) -> tuple[float, list[tuple[float, int]]]:
    prefix = unique("rf.bench.drain")
    with broker_topology(prefix) as names, database() as url, Servers(url, **names) as servers:
        ingest = servers.start("ingest")
        asyncio.run(fill(ingest.url, jobs))
        ingest.stop()
        servers.start("relay")
        servers.start("consume")
        return asyncio.run(watch(url, jobs, timeout=jobs / 20 + 60))


# ----------------------------------------------------------------------------- the baseline

async def bare_publish(url: str, queue: str, jobs: int) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)
        window = asyncio.Semaphore(500)

        async def one(i: int) -> None:
            async with window:
                body = b'{"job_id":"%s","attempt":1}' % uuid.uuid4().hex.encode()
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue)

        await asyncio.gather(*(one(i) for i in range(jobs)))


async def bare_consume(url: str, queue: str, jobs: int, out: Path) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    stamps: list[float] = []
    finished = asyncio.Event()
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=64)
        q = await channel.declare_queue(queue, durable=True)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            stamps.append(time.time())
            if len(stamps) >= jobs:
                finished.set()

        tag = await q.consume(on_message)
        await asyncio.wait_for(finished.wait(), jobs / 100 + 60)
        await q.cancel(tag)
        await channel.queue_delete(queue)
    out.write_text("\n".join(f"{s:.6f}" for s in stamps))


def bare_drain(jobs: int) -> tuple[float, list[tuple[float, int]]]:
    queue = unique("rf.bench.bare")
    stamps_file = OUT / "bare-stamps.txt"
    me = [sys.executable, __file__]
    consumer = subprocess.Popen(me + ["--bare", "consume", "--queue", queue, "--jobs", str(jobs)])
    time.sleep(1.0)  # the consumer declares the queue and waits
    subprocess.run(me + ["--bare", "publish", "--queue", queue, "--jobs", str(jobs)], check=True,
                   timeout=jobs / 50 + 120)
    consumer.wait(timeout=jobs / 50 + 120)
    stamps = [float(line) for line in stamps_file.read_text().split()]
    first = stamps[0]
    series = [(s - first, i + 1) for i, s in enumerate(stamps)
              if i % 100 == 0 or i == len(stamps) - 1]
    progress("draining (bare aio-pika)", len(stamps), jobs)
    return len(stamps) / max(stamps[-1] - first, 1e-6), series


def draw(ours: list[tuple[float, int]], bare: list[tuple[float, int]], path: Path) -> None:
    with chart(path, "Pipeline drain (2-core machine, PostgreSQL and RabbitMQ on the same box)",
               "seconds", "jobs done") as ax:
        ax.plot([t for t, _ in ours], [n for _, n in ours], label="relayforge: relay + consumer")
        ax.plot([t for t, _ in bare], [n for _, n in bare],
                label="bare aio-pika publish + consume", linestyle="--")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--bare", choices=("publish", "consume"), help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.bare == "publish":
        asyncio.run(bare_publish(os.environ.get("RELAYFORGE_TEST_AMQP_URL", _amqp()), args.queue,
                                 args.jobs))
        return
    if args.bare == "consume":
        asyncio.run(bare_consume(os.environ.get("RELAYFORGE_TEST_AMQP_URL", _amqp()), args.queue,
                                 args.jobs, OUT / "bare-stamps.txt"))
        return
    bare_rate, bare_series = bare_drain(args.jobs)
    ours_rate, ours_series = relayforge_drain(args.jobs)
    report(f"pipeline drain, {args.jobs:,} jobs", ours_rate, bare_rate, "bare aio-pika", "jobs/s",
           target=0.8)
    draw(ours_series, bare_series, OUT / "pipeline_drain.png")
    print(f"chart: {OUT / 'pipeline_drain.png'}")


def _amqp() -> str:
    from tests import support

    return support.amqp_url()


if __name__ == "__main__":
    main()
