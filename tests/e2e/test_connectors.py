"""The connectors through a real server, as the providers call it: a tenant's secret set through
the admin API, requests signed by the providers' own libraries (or as their docs compute it),
accepted once, deduplicated, refused when tampered; Slack's handshake; per-source body limits;
the process-wide budget of body bytes in flight."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
import standardwebhooks
import svix.webhooks
from paddle_billing.Notifications.PaddleSignature import PaddleSignature
from slack_sdk.signature import SignatureVerifier

from tests.support import ADMIN_KEY, GITHUB_SECRET, new_tenant, sign_github

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
WHSEC = "whsec_" + base64.b64encode(b"e2e-standard-webhooks-key-32byte").decode()


def _standard(body: bytes, secret: str, names: str = "webhook") -> dict[str, str]:
    msg_id, when = f"msg_{uuid.uuid4().hex}", datetime.now(tz=UTC)
    signer = standardwebhooks.Webhook(secret) if names == "webhook" else svix.webhooks.Webhook(
        secret)
    return {f"{names}-id": msg_id, f"{names}-timestamp": str(int(when.timestamp())),
            f"{names}-signature": signer.sign(msg_id, when, body.decode())}


def _slack(body: bytes, secret: str) -> dict[str, str]:
    ts = str(int(time.time()))
    return {"X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=ts,
                                                                               body=body)}


# source → (secret, body, headers(body, secret), expected event type, expected provider id)
CASES = {
    "standard": (WHSEC, b'{"type": "invoice.paid", "data": {"n": 1}}',
                 lambda b, s: _standard(b, s), "invoice.paid", None),
    "svix": (WHSEC, b'{"type": "user.created", "data": {"n": 2}}',
             lambda b, s: _standard(b, s, "svix"), "user.created", None),
    "shopify": ("shpss_e2e", b'{"id": 450789469, "total_price": "409.94"}',
                lambda b, s: {"X-Shopify-Topic": "orders/create",
                              "X-Shopify-Webhook-Id": f"wh-{uuid.uuid4()}",
                              "X-Shopify-Hmac-Sha256": base64.b64encode(hmac.new(
                                  s.encode(), b, hashlib.sha256).digest()).decode()},
                "orders/create", None),
    "slack": ("slack-signing-secret", orjson.dumps({
        "type": "event_callback", "event_id": f"Ev{uuid.uuid4().hex[:10]}",
        "event": {"type": "app_mention", "text": "hi"}}),
              lambda b, s: _slack(b, s), "app_mention", None),
    "gitlab": ("gitlab-secret-token", b'{"object_kind": "push", "ref": "refs/heads/main"}',
               lambda b, s: {"X-Gitlab-Token": s, "X-Gitlab-Event": "Push Hook",
                             "X-Gitlab-Event-UUID": str(uuid.uuid4())}, "Push Hook", None),
    "paddle": ("pdl_ntfset_e2e_secret", orjson.dumps({
        "event_id": f"evt_{uuid.uuid4().hex}", "event_type": "transaction.completed",
        "data": {"id": "txn_1"}}),
               lambda b, s: {"Paddle-Signature": (lambda ts: f"ts={ts};h1=" + PaddleSignature
                             .calculate_hmac(s, f"{ts}:".encode() + b).hexdigest())(
                                 int(time.time()))}, "transaction.completed", None),
    "linear": ("linear-webhook-secret", orjson.dumps({
        "action": "create", "type": "Issue", "data": {"id": "iss"},
        "webhookTimestamp": int(time.time() * 1000)}),
               lambda b, s: {"Linear-Signature": hmac.new(s.encode(), b, hashlib.sha256)
                             .hexdigest(), "Linear-Delivery": str(uuid.uuid4())},
               "Issue.create", None),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_each_source_accepts_its_providers_request_once_and_refuses_a_tampered_one(
        client, ingest_server, case):
    source = "standard" if case == "svix" else case
    secret, body, sign, event_type, _ = CASES[case]
    if case == "linear":  # freshness: a timestamp of now
        body = orjson.dumps({**orjson.loads(body), "webhookTimestamp": int(time.time() * 1000)})
    tenant = new_tenant()
    r = await client.put(f"{ingest_server.url}/admin/tenants/{tenant}/secrets/{source}",
                         headers=ADMIN, json={"secret": secret})
    assert r.status_code == 201, r.text
    url = f"{ingest_server.url}/tenants/{tenant}/webhooks/{source}"
    headers = {"Content-Type": "application/json", **sign(body, secret)}
    first = await client.post(url, content=body, headers=headers)
    assert first.status_code == 202, first.text
    again = await client.post(url, content=body, headers=headers)  # a provider's redelivery
    assert again.status_code == 202 and again.json()["deduped"] is True
    assert again.json()["job_id"] == first.json()["job_id"]
    job = (await client.get(f"{ingest_server.url}/admin/jobs/{first.json()['job_id']}",
                            headers=ADMIN)).json()
    assert (job["source"], job["event_type"]) == (source, event_type)
    if case == "gitlab":  # a secret token signs no body: a wrong token is what is refused
        tampered = await client.post(url, content=body, headers={**headers,
                                                                 "X-Gitlab-Token": "guess"})
    else:
        tampered = await client.post(url, content=body[:-1] + b" }", headers=headers)
    assert tampered.status_code == 401 and tampered.json()["code"] == "invalid_signature"
    other = await client.post(f"{ingest_server.url}/tenants/{new_tenant()}/webhooks/{source}",
                              content=body, headers=headers)  # no secret for that tenant
    assert other.status_code == 401


async def test_slack_url_verification_is_answered_with_its_challenge_and_makes_no_job(
        client, ingest_server):
    tenant = new_tenant()
    await client.put(f"{ingest_server.url}/admin/tenants/{tenant}/secrets/slack", headers=ADMIN,
                     json={"secret": "slack-handshake-secret"})
    body = (b'{"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmd", '
            b'"type": "url_verification"}')
    r = await client.post(f"{ingest_server.url}/tenants/{tenant}/webhooks/slack", content=body,
                          headers={"Content-Type": "application/json",
                                   **_slack(body, "slack-handshake-secret")})
    assert r.status_code == 200 and r.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmd"}
    jobs = (await client.get(f"{ingest_server.url}/admin/jobs", params={"tenant_id": tenant},
                             headers=ADMIN)).json()
    assert jobs["items"] == []
    unsigned = await client.post(f"{ingest_server.url}/tenants/{tenant}/webhooks/slack",
                                 content=body, headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401  # the handshake too must be signed
    day_old = str(int(time.time()) - 86_400)  # signed, but a day old: a replay, not answered
    stale = await client.post(
        f"{ingest_server.url}/tenants/{tenant}/webhooks/slack", content=body,
        headers={"Content-Type": "application/json", "X-Slack-Request-Timestamp": day_old,
                 "X-Slack-Signature": SignatureVerifier("slack-handshake-secret")
                 .generate_signature(timestamp=day_old, body=body)})
    assert stale.status_code == 401 and stale.json()["code"] == "stale_timestamp", stale.text


async def test_env_fallback_secret_per_new_source(client, start_server):
    server = start_server("ingest", WEBHOOKS__SHOPIFY_SECRET="env-shopify-secret")
    body = b'{"id": 1}'
    headers = {"X-Shopify-Topic": "products/update", "X-Shopify-Webhook-Id": "w-1",
               "X-Shopify-Hmac-Sha256": base64.b64encode(hmac.new(
                   b"env-shopify-secret", body, hashlib.sha256).digest()).decode()}
    r = await client.post(f"{server.url}/webhooks/shopify", content=body, headers=headers)
    assert r.status_code == 202, r.text
    r = await client.post(f"{server.url}/webhooks/linear", content=body, headers={
        "Linear-Signature": "00"})
    assert r.status_code == 401  # no env secret for linear: nothing verifies


async def test_body_limits_are_per_source(client, ingest_server):
    big = orjson.dumps({"commits": ["x" * 1000] * 1200})  # 1.2 MB: a large GitHub push
    r = await client.post(f"{ingest_server.url}/webhooks/github", content=big, headers={
        "X-Hub-Signature-256": sign_github(big, GITHUB_SECRET), "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json"})
    assert r.status_code == 202, r.text[:300]  # GitHub: up to 25 MiB
    for source in ("generic", "shopify"):  # 256 KiB (HARDENING__MAX_BODY_BYTES) and 1 MiB
        r = await client.post(f"{ingest_server.url}/webhooks/{source}", content=big)
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large", source


def test_an_unknown_source_is_refused_before_its_body_is_read(ingest_server):
    import socket

    host, port = ingest_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /webhooks/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n"
                     b"Content-Type: application/json\r\n\r\n")  # 100 MB promised, none sent
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 404"), answer[:100]
    assert b"unknown_source" in answer


def _peak_rss_kib(pid: int) -> int:
    """The peak resident size of a process and its children (Granian's worker is a child)."""
    peaks = []
    for status in [Path(f"/proc/{pid}/status")] + [
            Path(f"/proc/{child}/status") for child in Path(f"/proc/{pid}/task").glob("*/children")
            for child in child.read_text().split()]:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]))
    return max(peaks)


async def test_rss_stays_bounded_under_40_concurrent_20_mib_uploads(start_server):
    budget = 128 << 20  # a 20 MiB body counts 80 MiB (the copies it makes): one at a time
    server = start_server("ingest", HARDENING__MAX_INFLIGHT_BODY_BYTES=str(budget))
    body = b'{"pad": "' + b"x" * (20 << 20) + b'"}'
    headers = {"X-Hub-Signature-256": sign_github(body, GITHUB_SECRET), "X-GitHub-Event": "push",
               "Content-Type": "application/json"}
    before = _peak_rss_kib(server.process.pid)

    async def upload(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(f"{server.url}/webhooks/github", content=body,
                                 headers={**headers, "X-GitHub-Delivery": f"big-{i}"})

    limits = httpx.Limits(max_connections=40)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        answers = await asyncio.gather(*(upload(client, i) for i in range(40)))
    codes = sorted(r.status_code for r in answers)
    assert set(codes) <= {202, 503}, codes
    assert 202 in codes  # the budget lets some through
    refused = [r for r in answers if r.status_code == 503]
    assert all(r.json()["code"] == "overloaded" and r.headers["Retry-After"] for r in refused)
    peak = _peak_rss_kib(server.process.pid)
    print(f"peak RSS growth {(peak - before) / 1024:.0f} MiB; accepted {codes.count(202)}")
    # unbounded, 40 bodies of 20 MiB would take about 40 × 80 MiB at once; the budget keeps
    # the process within about twice itself (the refused ones are read and dropped)
    assert (peak - before) * 1024 < 2 * budget, (before, peak)
