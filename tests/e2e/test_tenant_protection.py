"""Tenant protection through a real server: daily quota, per-tenant token buckets charged only
after the signature, the global ingress limit under 1,000 concurrent requests."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import orjson
import pytest

from tests.support import (
    generic_body,
    new_tenant,
    post_generic,
    sign_generic,
    sign_stripe,
    stripe_event,
)


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


# The default burst; one token a second (the default is 50), so what gets through depends on
# the burst and not on how fast this client sends.
SLOW_UNVERIFIED = {"HARDENING__UNVERIFIED_RATE_LIMIT_PER_SECOND": "1",
                   "HARDENING__UNVERIFIED_BURST": "100"}


@pytest.fixture(scope="module")
def shared_limit_server(module_servers):
    """A small ingress limit (burst 30, then 5 a second) and a tenant limit of 10 (burst 10)."""
    return module_servers("ingest", HARDENING__INGRESS_RATE_LIMIT_PER_SECOND="5",
                          HARDENING__INGRESS_BURST="30",
                          HARDENING__TENANT_RATE_LIMIT_PER_SECOND="10",
                          HARDENING__TENANT_RATE_LIMIT_BURST="10", **SLOW_UNVERIFIED)


async def test_unsigned_junk_spends_its_own_budget_never_the_ingress_limit(
        client, shared_limit_server):
    """Junk at 500/s used to take the global ingress bucket before its signature was checked:
    144 of a paying tenant's 301 webhooks were refused. Failed signatures, unknown sources and
    bad tenant ids are charged to the sender's address instead, and past that budget they are
    429 themselves."""
    server = shared_limit_server
    started = time.monotonic()
    junk = []
    for i in range(150):
        target = ("/webhooks/generic", "/webhooks/no-such-source", "/webhooks/generic")[i % 3]
        headers = {"X-Signature": "0" * 64, "X-Tenant-Id": "not-a-uuid" if i % 3 == 2
                   else new_tenant()}
        junk.append(await client.post(server.url + target, content=generic_body(),
                                      headers=headers))
    elapsed = time.monotonic() - started
    codes = [r.status_code for r in junk]
    assert set(codes[:100]) == {400, 401, 404}, codes[:100]  # the burst: what they earned
    assert codes.count(429) >= 50 - elapsed - 1, codes  # then a token a second
    limited = next(r for r in junk if r.status_code == 429)
    assert limited.json()["code"] == "rate_limited" and int(limited.headers["retry-after"]) >= 1
    paying = new_tenant()
    accepted = [(await post_generic(client, server, generic_body(), paying)).status_code
                for _ in range(10)]
    assert accepted == [202] * 10  # the ingress burst of 30 is untouched by the junk


async def test_a_tenant_over_its_own_limit_takes_nothing_of_the_shared_ingress_limit(
        client, shared_limit_server):
    """One signed tenant at 400/s used to make another's webhooks 429: every request took an
    ingress token before its tenant's bucket refused it. The tenant's bucket comes first now."""
    server = shared_limit_server
    await asyncio.sleep(6)  # the ingress bucket refills (30 at 5/s) after the test before
    noisy, quiet = new_tenant(), new_tenant()
    noisy_codes = [(await post_generic(client, server, generic_body(), noisy)).status_code
                   for _ in range(60)]
    assert 10 <= noisy_codes.count(202) <= 20 and noisy_codes.count(429) >= 40, noisy_codes
    quiet_codes = [(await post_generic(client, server, generic_body(), quiet)).status_code
                   for _ in range(10)]
    assert quiet_codes == [202] * 10, quiet_codes


async def test_guessing_admin_keys_console_keys_and_flooding_csp_reports_is_throttled(
        client, start_server):
    """300 wrong bearer keys in 0.3 s were each answered 401. Each wrong key, failed console
    sign-in and CSP report is charged to the address; past the budget: 429 with Retry-After. A
    right key is never refused for it."""
    from tests.support import ADMIN_KEY

    server = start_server("ingest", **SLOW_UNVERIFIED)
    started = time.monotonic()
    wrong = [await client.get(f"{server.url}/admin/jobs",
                              headers={"Authorization": f"Bearer guess-{i}"}) for i in range(120)]
    codes = [r.status_code for r in wrong]
    assert codes[:100] == [401] * 100 and codes.count(429) >= 20 - (
        time.monotonic() - started) - 1, codes
    assert int(wrong[-1].headers["retry-after"]) >= 1
    right = await client.get(f"{server.url}/admin/jobs",
                             headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert right.status_code == 200
    sign_in = await client.post(f"{server.url}/console/login", data={"key": "guess"})
    assert sign_in.status_code == 429 and "Too many attempts" in sign_in.text
    assert sign_in.headers["retry-after"]
    report = await client.post(f"{server.url}/console/csp-report", content=b"{}")
    assert report.status_code == 429  # the same address's budget

    fresh = start_server("ingest", **SLOW_UNVERIFIED)
    big = await client.post(f"{fresh.url}/console/csp-report", content=b"x" * 60_000)
    assert big.status_code == 413  # a real report is a few hundred bytes
    started = time.monotonic()
    reports = [(await client.post(f"{fresh.url}/console/csp-report",
                                  content=b'{"csp-report":{}}')).status_code for _ in range(120)]
    assert reports[:99] == [204] * 99, reports  # the 413 above was charged too
    assert reports.count(429) >= 21 - (time.monotonic() - started) - 1, reports
