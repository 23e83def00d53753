"""Delivery drain: deliveries/s to a local receiver that answers 200 at once, next to the
jobs/s of the default handler alone, in the same run.

    .venv/bin/python bench/delivery_drain.py                 # 5,000 events each
    .venv/bin/python bench/delivery_drain.py --events 2000

Both phases record EVENTS webhooks with an ingest-only process first, then start one `relay`
and one `consume` process (default settings) and time the drain from the first success to the
last, read from the database. Baseline: the tenant has no destination (each event is one job).
Relayforge: the tenant has one destination (max_concurrency 64) on a local aiohttp receiver, so
each event is a job plus a delivery (a second message through RabbitMQ, a signed HTTP POST,
its outcome and attempt log written). The figure is deliveries/s; the ratio is over jobs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

from common import Servers, broker_topology, database, progress, report, unique
from pipeline_drain import fill, watch

from tests import support

TENANT = "00000000-0000-0000-0000-000000000000"  # the default tenant (no X-Tenant-Id)
RECEIVER = """
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(text="ok")
app = web.Application()
app.router.add_post("/hook", ok)
web.run_app(app, host="127.0.0.1", port={port}, access_log=None, print=None)
"""


async def watch_deliveries(database_url: str, events: int, timeout: float) -> float:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            done = await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
            progress("delivering", done, events)
            if done >= events:
                break
            await asyncio.sleep(0.25)
        count, first, last = await conn.fetchrow(
            "SELECT count(*), min(updated_at), max(updated_at) FROM deliveries "
            "WHERE status = 'succeeded'")
    finally:
        await conn.close()
    if count < events:
        raise SystemExit(f"only {count} of {events} deliveries succeeded within {timeout:.0f}s")
    return float(count / max((last - first).total_seconds(), 1e-6))


def drain(events: int, with_destination: bool) -> float:
    prefix = unique("rf.bench.delivery")
    port = support.free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER.format(port=port)])
    try:
        with broker_topology(prefix) as names, database() as url, \
                Servers(url, **names, DESTINATIONS__ALLOW_PRIVATE_NETWORKS="true") as servers:
            ingest = servers.start("ingest")
            if with_destination:
                import httpx

                r = httpx.post(f"{ingest.url}/admin/tenants/{TENANT}/destinations",
                               headers={"Authorization": f"Bearer {support.ADMIN_KEY}"},
                               json={"url": f"http://127.0.0.1:{port}/hook",
                                     "max_concurrency": 64})
                assert r.status_code == 201, r.text
            asyncio.run(fill(ingest.url, events))
            ingest.stop()
            servers.start("relay")
            servers.start("consume")
            if with_destination:
                return asyncio.run(watch_deliveries(url, events, timeout=events / 10 + 60))
            return asyncio.run(watch(url, events, timeout=events / 10 + 60))[0]
    finally:
        receiver.terminate()
        receiver.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    jobs_rate = drain(args.events, with_destination=False)
    deliveries_rate = drain(args.events, with_destination=True)
    report(f"delivery drain, {args.events:,} events", deliveries_rate, jobs_rate,
           "jobs alone (default handler)", "per second", target=None)


if __name__ == "__main__":
    main()
