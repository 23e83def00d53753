"""Tenant protection through a real server: daily quota, per-tenant token buckets charged only
after the signature, the global ingress limit under 1,000 concurrent requests."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import orjson
import pytest

from tests.e2e.test_webhooks import generic_body, post_generic, stripe_event
from tests.support import new_tenant, sign_generic, sign_stripe


@pytest.fixture(scope="module")
def quota_server(module_servers):
    return module_servers("ingest", HARDENING__TENANT_DAILY_QUOTA="1")


async def test_daily_quota_is_per_tenant(client, quota_server):
    a, b = new_tenant(), new_tenant()
    assert (await post_generic(client, quota_server, generic_body(), a)).status_code == 202
    refused = await post_generic(client, quota_server, generic_body(), a)
    assert refused.status_code == 429
    assert refused.json()["code"] == "quota_exceeded"
    assert 0 < int(refused.headers["retry-after"]) <= 86401
    assert (await post_generic(client, quota_server, generic_body(), b)).status_code == 202


async def test_stripe_event_refused_for_quota_is_accepted_on_retry(client, quota_server, db):
    tenant = new_tenant()
    url = f"{quota_server.url}/tenants/{tenant}/webhooks/stripe"
    first, refused = stripe_event(), stripe_event()
    assert (await client.post(url, content=first,
                              headers={"Stripe-Signature": sign_stripe(first)})).status_code == 202
    r = await client.post(url, content=refused, headers={"Stripe-Signature": sign_stripe(refused)})
    assert r.status_code == 429 and r.json()["code"] == "quota_exceeded"
    # Still refused while the quota is spent, never "replayed": the refusal reserved nothing.
    r = await client.post(url, content=refused, headers={"Stripe-Signature": sign_stripe(refused)})
    assert r.json()["code"] == "quota_exceeded"
    conn = await db(quota_server.database_url)
    await conn.execute("UPDATE tenant_daily_quota_usage SET used = 0 WHERE tenant_id = $1",
                       uuid.UUID(tenant))  # the next UTC day
    r = await client.post(url, content=refused, headers={"Stripe-Signature": sign_stripe(refused)})
    assert r.status_code == 202, r.text
    r = await client.post(url, content=refused, headers={"Stripe-Signature": sign_stripe(refused)})
    assert r.status_code == 409 and r.json()["code"] == "replayed_event"


async def test_concurrent_requests_never_exceed_the_quota(client, start_server, db):
    server = start_server("ingest", HARDENING__TENANT_DAILY_QUOTA="25")
    tenant = new_tenant()
    results = await asyncio.gather(*(post_generic(client, server, generic_body(), tenant)
                                     for _ in range(80)))
    codes = sorted(r.status_code for r in results)
    assert codes.count(202) == 25 and codes.count(429) == 55
    conn = await db(server.database_url)
    assert await conn.fetchval("SELECT used FROM tenant_daily_quota_usage WHERE tenant_id = $1",
                               uuid.UUID(tenant)) == 25


@pytest.fixture(scope="module")
def bucket_server(module_servers):
    return module_servers("ingest", HARDENING__TENANT_RATE_LIMIT_PER_SECOND="0.5",
                        HARDENING__TENANT_RATE_LIMIT_BURST="3")


async def test_tenant_rate_limit_is_isolated_per_tenant(client, bucket_server):
    noisy, quiet = new_tenant(), new_tenant()
    noisy_codes = [(await post_generic(client, bucket_server, generic_body(), noisy))
                   for _ in range(6)]
    assert [r.status_code for r in noisy_codes] == [202, 202, 202, 429, 429, 429]
    limited = noisy_codes[-1]
    assert limited.json()["code"] == "rate_limited" and int(limited.headers["retry-after"]) >= 1
    quiet_codes = [(await post_generic(client, bucket_server, generic_body(), quiet)).status_code
                   for _ in range(3)]
    assert quiet_codes == [202, 202, 202]


async def test_unsigned_traffic_cannot_drain_a_tenants_bucket(client, bucket_server):
    victim = new_tenant()
    for _ in range(10):
        body = generic_body()
        r = await client.post(f"{bucket_server.url}/webhooks/generic", content=body,
                              headers={"X-Signature": "0" * 64, "X-Tenant-Id": victim})
        assert r.status_code == 401
    codes = [(await post_generic(client, bucket_server, generic_body(), victim)).status_code
             for _ in range(3)]
    assert codes == [202, 202, 202]


async def test_1000_concurrent_requests_against_a_small_global_limit(start_server, db):
    import httpx

    # One token a second: what the limit lets through depends on the burst, not on how fast
    # this client sends.
    server = start_server("ingest", HARDENING__INGRESS_RATE_LIMIT_PER_SECOND="1",
                          HARDENING__INGRESS_BURST="100")
    tenants = [new_tenant() for _ in range(20)]
    # As many in flight as the client has connections. With the other 800 queued in its pool,
    # httpx took ~14 s to send the first request, and connections it had opened sat idle past
    # the server's header timeout, which closed them (a ReadError, now and then).
    in_flight = asyncio.Semaphore(200)
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def one(i: int) -> tuple[int, str | None]:
            body = orjson.dumps({"event": "burst", "data": i})
            async with in_flight:
                r = await client.post(f"{server.url}/webhooks/generic", content=body, headers={
                    "X-Signature": sign_generic(body), "X-Tenant-Id": tenants[i % 20]})
            return r.status_code, r.json().get("inbox_id") if r.status_code == 202 else None

        started = time.monotonic()
        results = await asyncio.gather(*(one(i) for i in range(1000)))
        elapsed = time.monotonic() - started
    codes = [c for c, _ in results]
    assert set(codes) <= {202, 429}, sorted(set(codes))
    accepted = {i for c, i in results if c == 202}
    assert 100 <= len(accepted) <= 100 + elapsed + 1  # the burst, then a token a second
    conn: asyncpg.Connection = await db(server.database_url)
    stored = {str(r["id"]) for r in await conn.fetch(
        "SELECT id FROM webhook_inbox WHERE tenant_id = ANY($1::uuid[]) AND accepted",
        [uuid.UUID(t) for t in tenants])}
    assert stored == accepted  # every 202 is in the inbox; nothing else is


async def test_a_replay_is_409_even_when_the_quota_is_spent(client, quota_server):
    tenant = new_tenant()
    url = f"{quota_server.url}/tenants/{tenant}/webhooks/stripe"
    event = stripe_event()
    assert (await client.post(url, content=event,
                              headers={"Stripe-Signature": sign_stripe(event)})).status_code == 202
    replay = await client.post(url, content=event, headers={"Stripe-Signature": sign_stripe(event)})
    assert replay.status_code == 409 and replay.json()["code"] == "replayed_event"
