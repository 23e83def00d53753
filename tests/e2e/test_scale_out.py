"""Limits that hold per deployment: several processes on one database split a tenant's rate
limit and a destination's rate between them (each holds a lease in PostgreSQL and enforces its
share), so adding processes does not multiply what a tenant or its service gets."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import httpx
import orjson
import pytest

from tests.e2e.pipeline_support import FAST, amqp_env, delete_topology, wait_for_shares
from tests.e2e.receiver import Receiver
from tests.support import ADMIN_KEY, new_tenant, sign_generic

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def offer(urls: list[str], tenant: str, rate: int, seconds: int
                ) -> tuple[list[int], float]:
    """`rate` signed unique webhooks a second for `seconds`, round robin over `urls` (bodies
    signed beforehand; aiohttp keeps up with 300/s where httpx does not): the status codes,
    and the seconds the sending took."""
    requests = []
    for i in range(rate * seconds):
        body = orjson.dumps({"event": "burst", "data": {"i": i, "u": uuid.uuid4().hex}})
        requests.append((f"{urls[i % len(urls)]}/webhooks/generic", body, {
            "X-Signature": sign_generic(body), "X-Tenant-Id": tenant,
            "Content-Type": "application/json"}))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as session:
        start = time.monotonic()

        async def one(i: int) -> int:
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            url, body, headers = requests[i]
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(one(i) for i in range(len(requests))))
        return statuses, time.monotonic() - start


async def test_a_tenants_rate_limit_holds_across_three_ingest_processes(
        start_server, fresh_database):
    database = fresh_database()
    limits = {"HARDENING__TENANT_RATE_LIMIT_PER_SECOND": "50",
              "HARDENING__TENANT_RATE_LIMIT_BURST": "50",
              "HARDENING__INGRESS_RATE_LIMIT_PER_SECOND": "100000",
              "HARDENING__INGRESS_BURST": "100000"}
    servers = [start_server("ingest", database_url=database, **limits) for _ in range(3)]
    await wait_for_shares(database, "ingest", 3)
    statuses, took = await offer([s.url for s in servers], new_tenant(), 300, 10)
    accepted = statuses.count(202)
    assert set(statuses) <= {202, 429}, sorted(set(statuses))
    assert took < 11, f"the client sent 3,000 requests in {took:.1f} s, not 10"
    # 50/s for 10 s and a burst of 50: 550 for the deployment (one process alone would
    # allow that much, three of them 1,650 before their limits were shared)
    assert 450 <= accepted <= 600, accepted
    print(f"accepted {accepted} of 3,000 in {took:.1f} s")


@pytest.fixture
def names():
    prefix = f"rft.scale.{uuid.uuid4().hex[:8]}"
    yield prefix
    asyncio.run(delete_topology(prefix))


async def test_a_destinations_rate_holds_across_three_consume_processes(
        start_server, fresh_database, names):
    database = fresh_database()
    env = {**amqp_env(names), **FAST, "DESTINATIONS__ALLOW_PRIVATE_NETWORKS": "true",
           "HARDENING__TENANT_RATE_LIMIT_PER_SECOND": "10000",
           "HARDENING__TENANT_RATE_LIMIT_BURST": "10000"}
    front = start_server("all", database_url=database, **env)
    for _ in range(2):
        start_server("consume", database_url=database, **env)
    receiver = await Receiver().start()
    try:
        await wait_for_shares(database, "consume", 3)
        tenant = new_tenant()
        async with httpx.AsyncClient(timeout=30) as client:
            made = await client.post(f"{front.url}/admin/tenants/{tenant}/destinations",
                                     headers=ADMIN, json={"url": f"{receiver.url}/limited",
                                                          "rate_limit_per_second": 20})
            assert made.status_code == 201, made.text
        statuses, _ = await offer([front.url], tenant, 200, 2)
        assert set(statuses) == {202}
        arrived = await receiver.wait_for("/limited", 400, timeout=60)
        times = sorted(a.at for a in arrived)
        span = times[-1] - times[0]
        # 400 at 20/s: about 20 s. Each process sends a third of the rate; over the run the
        # destination never gets more than 10 % above what it asked for.
        assert len(arrived) == 400
        assert (len(times) - 1) / span <= 22, (len(times) - 1) / span
        # nor any ten seconds: rate x time and a burst (a second's worth, split as the rate is,
        # refilled whenever deliveries pause), within the 10 %, as for the tenant's limit
        worst = max(sum(1 for t in times if s <= t < s + 10) for s in times)
        assert worst <= 1.1 * (20 * 10 + 20), worst
        print(f"400 deliveries in {span:.1f} s: {(len(times) - 1) / span:.1f}/s, "
              f"the busiest 10 s {worst}")
    finally:
        await receiver.stop()
