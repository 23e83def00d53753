"""Delivery drain: deliveries/s to one destination, next to a bare HTTP client POSTing the same
bodies to the same receiver in the same run; and the provider → receiver latency at 500/s.

    .venv/bin/python bench/delivery_drain.py                  # 5,000 events, both settings
    .venv/bin/python bench/delivery_drain.py --events 2000 --latency-seconds 10

The receiver is the bare BlackSheep app on Granian (echo_app.py), answering 202 at once.

Drain: EVENTS signed 1 KiB generic webhooks for one tenant with one destination are recorded by an
ingest-only process; then one `relay` and one `consume` process start (default settings) and the
figure is the deliveries/s from the first success to the last, read from the database. It runs
twice: the destination at its defaults (`max_concurrency` from DESTINATIONS__MAX_CONCURRENCY),
then with `max_concurrency: 64`. Baseline, in the same run: a bare aiohttp client process POSTing
the same number of 1 KiB bodies, signed with HMAC-SHA256 per request, 64 in flight. Under each
figure: the machine's busy CPU per delivery while it drained, and its share in the consume
process ("server"), PostgreSQL and RabbitMQ: on a shared machine, the figure that moves least.

Latency: mode `all` on RabbitMQ, webhooks offered at 500/s for LATENCY_SECONDS, each carrying the
time it was sent (data.sent_at); the receiver keeps the time from then to its arrival (p50, p99),
and the database says where it went: the p50 of each stage on the way.

Isolation (--isolation): one tenant's destination drained alone, then again next to another
tenant's destination that answers in 2 s (its events recorded first, so they are ahead in the
queue); the fast one's deliveries/s in both runs, their ratio, and the most requests the slow
receiver held at once next to that destination's max_concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import statistics
import subprocess
import sys
import time
import uuid

import httpx
import orjson
from common import (
    SECRET,
    CpuAccount,
    Servers,
    broker_topology,
    database,
    echo_server,
    progress,
    report,
    unique,
)
from pipeline_drain import fill

from tests import support

TENANT = "00000000-0000-0000-0000-000000000000"  # the default tenant (no X-Tenant-Id)
BODY_BYTES = 1024
IN_FLIGHT = 64
SLOW_EVENTS = 300  # to the slow destination: 2 s each, so it stays busy through the drain
SLOW_MAX_CONCURRENCY = 10  # DESTINATIONS__MAX_CONCURRENCY's default


def add_destination(ingest_url: str, url: str, tenant: str = TENANT, **fields: object) -> None:
    r = httpx.post(f"{ingest_url}/admin/tenants/{tenant}/destinations",
                   headers={"Authorization": f"Bearer {support.ADMIN_KEY}"},
                   json={"url": url, **fields})
    assert r.status_code == 201, r.text


async def watch_deliveries(database_url: str, events: int, timeout: float,
                           tenant: str | None = None) -> float:
    """Deliveries/s from the first success to the last, once `events` succeeded (of `tenant`'s
    destinations only, when given)."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    started = time.monotonic()
    mine = "status = 'succeeded' AND ($1::uuid IS NULL OR tenant_id = $1)"
    try:
        while time.monotonic() - started < timeout:
            done = await conn.fetchval(f"SELECT count(*) FROM deliveries WHERE {mine}", tenant)
            progress("delivering", done, events)
            if done >= events:
                break
            await asyncio.sleep(0.25)
        count, first, last = await conn.fetchrow(
            f"SELECT count(*), min(updated_at), max(updated_at) FROM deliveries WHERE {mine}",
            tenant)
    finally:
        await conn.close()
    if count < events:
        raise SystemExit(f"only {count} of {events} deliveries succeeded within {timeout:.0f}s")
    return float(count / max((last - first).total_seconds(), 1e-6))


def drain(events: int, receiver: str, **destination: object) -> tuple[float, str]:
    """Deliveries/s, and where the machine's CPU went per delivery (the consume process is
    "server"): the figure noise on a shared machine moves least."""
    prefix = unique("rf.bench.delivery")
    with broker_topology(prefix) as names, database() as url, \
            Servers(url, **names, DESTINATIONS__ALLOW_PRIVATE_NETWORKS="true") as servers:
        ingest = servers.start("ingest")
        add_destination(ingest.url, receiver, **destination)
        asyncio.run(fill(ingest.url, events, body_bytes=BODY_BYTES))
        ingest.stop()
        servers.start("relay")
        consume = servers.start("consume")
        with CpuAccount(consume.process.pid) as cpu:
            rate = asyncio.run(watch_deliveries(url, events, timeout=events / 10 + 60))
        return rate, cpu.per(events, "delivery")


# ---------------------------------------------------------------------------- isolation

def drain_beside(events: int, fast: str, slow: str | None, slow_events: int) -> float:
    """The fast tenant's deliveries/s, alone or (`slow`) next to a slow tenant's destination
    whose events were recorded first."""
    prefix = unique("rf.bench.isolation")
    fast_tenant, slow_tenant = str(uuid.uuid4()), str(uuid.uuid4())
    with broker_topology(prefix) as names, database() as url, \
            Servers(url, **names, DESTINATIONS__ALLOW_PRIVATE_NETWORKS="true") as servers:
        ingest = servers.start("ingest")
        add_destination(ingest.url, fast, fast_tenant)
        if slow is not None:
            add_destination(ingest.url, slow, slow_tenant)
            asyncio.run(fill(ingest.url, slow_events, body_bytes=BODY_BYTES, tenant=slow_tenant))
        asyncio.run(fill(ingest.url, events, body_bytes=BODY_BYTES, tenant=fast_tenant))
        ingest.stop()
        servers.start("relay")
        servers.start("consume")
        return asyncio.run(watch_deliveries(url, events, timeout=events / 10 + 60,
                                            tenant=fast_tenant))


def isolation(events: int, port: int) -> None:
    fast = f"http://127.0.0.1:{port}/webhooks/destination"
    slow = f"http://127.0.0.1:{port}/slow"
    alone = drain_beside(events, fast, None, 0)
    beside = drain_beside(events, fast, slow, SLOW_EVENTS)
    report(f"isolation, {events:,} events to a fast destination next to one answering in 2 s",
           beside, alone, "the same destination alone", "deliveries/s", target=0.9)
    held = httpx.get(slow).json()["max_in_flight"]
    print(f"        the slow destination held at most {held} requests at once "
          f"(its max_concurrency: {SLOW_MAX_CONCURRENCY}, the default)")


# ----------------------------------------------------------------------------- the baseline

async def bare_client(url: str, requests: int) -> float:
    """POST `requests` signed 1 KiB bodies, IN_FLIGHT at a time; requests/s."""
    import aiohttp

    key = b"bench-destination-secret"
    left = iter(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in left:
            message_id = uuid.uuid4().hex
            body = orjson.dumps({"id": message_id, "pad": "x" * (BODY_BYTES - 50)})
            timestamp = str(int(time.time()))
            signature = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body,
                                 hashlib.sha256).hexdigest()
            async with session.post(url, data=body, headers={
                    "content-type": "application/json", "webhook-id": message_id,
                    "webhook-timestamp": timestamp, "webhook-signature": f"v1,{signature}"}) as r:
                await r.read()
                assert r.status == 202, r.status

    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(IN_FLIGHT)))
        return requests / (time.perf_counter() - started)


def bare_rate(url: str, requests: int) -> float:
    """In its own process, as the consume process is."""
    out = subprocess.run([sys.executable, __file__, "--bare-client", url, "--events",
                          str(requests)], check=True, capture_output=True, text=True,
                         timeout=requests / 20 + 60)
    return float(out.stdout.strip())


# ------------------------------------------------------------------------------- latency

async def offer(ingest_url: str, rate: int, seconds: float) -> int:
    """Signed generic webhooks at `rate`/s (open loop), each with its `sent_at`."""
    import aiohttp

    total = int(rate * seconds)
    tasks = []
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            body = orjson.dumps({"event": "bench.latency",
                                 "data": {"id": uuid.uuid4().hex, "sent_at": time.time()}})
            sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            async with session.post(f"{ingest_url}/webhooks/generic", data=body,
                                    headers={"X-Signature": sig}) as r:
                assert r.status == 202, await r.text()

        started = time.perf_counter()
        for i in range(total):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return total


STAGES = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM j.created_at) - (
           convert_from(i.body, 'UTF8')::jsonb #>> '{data,sent_at}')::float8)
           AS "provider's request -> recorded",
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.created_at - j.created_at))
           AS "recorded -> fanned out",
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.started_at - d.created_at))
           AS "fanned out -> request",
       percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms / 1000) AS "request"
FROM jobs j
JOIN webhook_inbox i ON i.id = j.first_inbox_id
JOIN deliveries d ON d.job_id = j.id
JOIN delivery_attempts a ON a.delivery_id = d.id AND a.attempt = 1
"""


async def stages(database_url: str) -> str:
    """Where the time goes, p50 of each stage in ms (each timestamp is its transaction's
    start: a job is recorded at its batch's, fanned out at its consumer's)."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(STAGES)
    finally:
        await conn.close()
    return ", ".join(f"{name} {value * 1000:.1f}" for name, value in row.items()
                     if value is not None)


def latency(receiver_port: int, rate: int, seconds: float) -> tuple[float, float, str]:
    """p50 and p99, in ms, from the provider's request to the receiver's arrival; and the
    p50 of each stage on the way."""
    prefix = unique("rf.bench.latency")
    receiver = f"http://127.0.0.1:{receiver_port}/timed"
    with broker_topology(prefix) as names, database() as url, \
            Servers(url, **names, DESTINATIONS__ALLOW_PRIVATE_NETWORKS="true") as servers:
        server = servers.start("all")
        add_destination(server.url, receiver, payload="raw")
        total = asyncio.run(offer(server.url, rate, seconds))
        deadline = time.monotonic() + 60
        while True:
            delays = httpx.get(receiver).json()
            progress("latency: delivered", len(delays), total)
            if len(delays) >= total or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        where = asyncio.run(stages(url))
    if len(delays) < total:
        raise SystemExit(f"only {len(delays)} of {total} events arrived within 60 s")
    cuts = statistics.quantiles([d * 1000 for d in delays], n=100)
    return cuts[49], cuts[98], where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--latency-rate", type=int, default=500)
    parser.add_argument("--isolation", action="store_true",
                        help="only the isolation figure: a fast destination next to a slow one")
    parser.add_argument("--bare-client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_client:
        print(asyncio.run(bare_client(args.bare_client, args.events)))
        return
    port = support.free_port()
    echo = echo_server(port)
    receiver = f"http://127.0.0.1:{port}/webhooks/destination"
    if args.isolation:
        try:
            isolation(args.events, port)
        finally:
            echo.terminate()
            echo.wait()
        return
    try:
        for label, destination in (("defaults", {}), ("max_concurrency 64",
                                                     {"max_concurrency": 64})):
            ours, cpu = drain(args.events, receiver, **destination)
            bare = bare_rate(receiver, args.events)
            report(f"delivery drain, {args.events:,} events, {label}", ours, bare,
                   f"bare aiohttp client ({IN_FLIGHT} in flight)", "per second",
                   target=0.25 if not destination else 0.4)
            print(f"        {cpu}")
        if args.latency_seconds > 0:
            p50, p99, where = latency(port, args.latency_rate, args.latency_seconds)
            print(f"provider -> receiver at {args.latency_rate}/s for "
                  f"{args.latency_seconds:.0f} s (mode all, RabbitMQ): p50 {p50:.1f} ms, "
                  f"p99 {p99:.1f} ms (target p50 < 30 ms, p99 < 250 ms)")
            print(f"        stages, p50 in ms: {where}")
    finally:
        echo.terminate()
        echo.wait()


if __name__ == "__main__":
    main()
