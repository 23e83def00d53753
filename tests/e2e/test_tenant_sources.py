"""Tenant-defined sources through real servers: defined with the admin API, secret through the
secrets API, signed as the definition says, seen by every ingest process at once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid

import orjson

from tests.support import ADMIN_KEY, VIEWER_KEY, new_tenant

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
HMAC_SHA1 = {
    "verification": {"type": "hmac", "header": "X-Acme-Signature", "algorithm": "sha1",
                     "encoding": "base64", "prefix": "sha1=",
                     "signed_content": "{timestamp}.{body}", "timestamp_header": "X-Acme-Time",
                     "tolerance_seconds": 120},
    "event_type": {"header": "X-Acme-Event"},
    "event_id": {"body": "meta.delivery_id"},
    "max_body_bytes": 4096,
}


async def define(client, server, tenant: str, name: str, definition: dict, secret: str) -> dict:
    r = await client.put(f"{server.url}/admin/tenants/{tenant}/sources/{name}", headers=ADMIN,
                         json=definition)
    assert r.status_code == 200, r.text
    s = await client.put(f"{server.url}/admin/tenants/{tenant}/secrets/{name}", headers=ADMIN,
                         json={"secret": secret})
    assert s.status_code == 201, s.text
    return r.json()


def acme_headers(body: bytes, secret: str, ts: int | None = None) -> dict[str, str]:
    ts = ts or int(time.time())
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha1).digest()
    return {"X-Acme-Signature": "sha1=" + base64.b64encode(mac).decode(),
            "X-Acme-Time": str(ts), "X-Acme-Event": "shipment.sent",
            "Content-Type": "application/json"}


async def test_an_hmac_source_defined_without_code(client, ingest_server):
    tenant = new_tenant()
    view = await define(client, ingest_server, tenant, "acme", HMAC_SHA1, "acme-secret")
    assert view["webhook_url_path"] == f"/tenants/{tenant}/webhooks/acme"
    url = f"{ingest_server.url}{view['webhook_url_path']}"
    body = orjson.dumps({"meta": {"delivery_id": 90210}, "parcel": "p-1"})
    first = await client.post(url, content=body, headers=acme_headers(body, "acme-secret"))
    assert first.status_code == 202, first.text
    again = await client.post(url, content=body, headers=acme_headers(body, "acme-secret"))
    assert again.json()["deduped"] is True  # the id from meta.delivery_id
    job = (await client.get(f"{ingest_server.url}/admin/jobs/{first.json()['job_id']}",
                            headers=ADMIN)).json()
    assert (job["source"], job["event_type"], job["provider_event_id"]) == (
        "acme", "shipment.sent", "90210")
    wrong = await client.post(url, content=body, headers=acme_headers(body, "guess"))
    # a failed signature is answered as for a name the tenant never defined (404)
    assert wrong.status_code == 404 and wrong.json()["code"] == "unknown_source"
    undefined = await client.post(url.replace("/acme", "/acme2"), content=body,
                                  headers=acme_headers(body, "guess"))
    assert (undefined.status_code, undefined.json()) == (404, {
        **wrong.json(), "error": wrong.json()["error"].replace("'acme'", "'acme2'")})
    stale = await client.post(url, content=body, headers=acme_headers(
        body, "acme-secret", ts=int(time.time()) - 600))
    assert stale.status_code == 401 and stale.json()["code"] == "stale_timestamp"
    big = orjson.dumps({"meta": {"delivery_id": 1}, "pad": "x" * 5000})
    too_big = await client.post(url, content=big, headers=acme_headers(big, "acme-secret"))
    assert too_big.status_code == 413  # its own max_body_bytes
    other_tenant = await client.post(f"{ingest_server.url}/tenants/{new_tenant()}/webhooks/acme",
                                     content=body, headers=acme_headers(body, "acme-secret"))
    assert other_tenant.status_code == 404  # a tenant's source is its own


async def test_token_and_basic_auth_sources(client, ingest_server):
    tenant = new_tenant()
    await define(client, ingest_server, tenant, "tokened",
                 {"verification": {"type": "token", "header": "X-Hook-Token"},
                  "event_type": {"body": "kind"}}, "tok-123")
    url = f"{ingest_server.url}/tenants/{tenant}/webhooks/tokened"
    body = b'{"kind": "ping", "n": 1}'
    assert (await client.post(url, content=body, headers={"X-Hook-Token": "tok-123"})
            ).status_code == 202
    for wrong in ({"X-Hook-Token": "tok-12"}, {"X-Hook-Token": "tok-1234"}, {}):
        r = await client.post(url, content=body, headers=wrong)
        assert (r.status_code, r.json()["code"]) == (404, "unknown_source"), (wrong, r.text)

    await define(client, ingest_server, tenant, "basic",
                 {"verification": {"type": "basic_auth"}}, "hooks:s3cret")
    url = f"{ingest_server.url}/tenants/{tenant}/webhooks/basic"
    good = "Basic " + base64.b64encode(b"hooks:s3cret").decode()
    bad = "Basic " + base64.b64encode(b"hooks:guess").decode()
    r = await client.post(url, content=body, headers={"Authorization": good})
    assert r.status_code == 202, r.text
    job = (await client.get(f"{ingest_server.url}/admin/jobs/{r.json()['job_id']}",
                            headers=ADMIN)).json()
    assert job["event_type"] == "basic"  # no event_type given: the source's name
    assert (await client.post(url, content=body, headers={"Authorization": bad})
            ).status_code == 404
    # HMAC's key handling pads with zeros and hashes long keys: neither may pass for the secret
    padded = "Basic " + base64.b64encode(b"hooks:s3cret\x00\x00").decode()
    assert (await client.post(url, content=body, headers={"Authorization": padded})
            ).status_code == 404
    long_secret = "hooks:" + "s" * 80
    await define(client, ingest_server, tenant, "basic", {"verification": {"type": "basic_auth"}},
                 long_secret)
    await asyncio.sleep(0.3)  # the change reaches the secrets cache (NOTIFY)
    digest = hashlib.sha256(long_secret.encode()).digest()
    for credentials in (digest, b"hooks:" + b"s" * 80 + b"\x00"):
        r = await client.post(url, content=body, headers={
            "Authorization": "Basic " + base64.b64encode(credentials).decode()})
        assert r.status_code == 404, (credentials, r.text)
    r = await client.post(url, content=body, headers={
        "Authorization": "Basic " + base64.b64encode(long_secret.encode()).decode()})
    assert r.status_code == 202, r.text


async def test_definitions_are_checked_and_built_in_names_reserved(client, ingest_server):
    tenant = new_tenant()
    url = f"{ingest_server.url}/admin/tenants/{tenant}/sources"
    r = await client.put(f"{url}/github", headers=ADMIN, json=HMAC_SHA1)
    assert r.status_code == 409
    cases = {
        "verification.timestamp_header": {"verification": {
            "type": "hmac", "header": "X-S", "signed_content": "{timestamp}:{body}"}},
        "event_id": {"verification": {"type": "token", "header": "X-T"},
                     "event_id": {"header": "X-Id", "body": "id"}},
        "algorithm": {"verification": {"type": "hmac", "header": "X-S", "algorithm": "md5"}},
        "verification": {"verification": {"type": "oauth"}},
        "max_body_bytes": {"verification": {"type": "basic_auth"},
                           "max_body_bytes": 100 * 2**20},
    }
    for field, body in cases.items():
        r = await client.put(f"{url}/fine", headers=ADMIN, json=body)
        assert r.status_code == 400 and field in r.json()["error"], (field, r.text)
    assert (await client.put(f"{url}/Bad Name!", headers=ADMIN, json=HMAC_SHA1)
            ).status_code == 400
    assert (await client.get(url, headers={"Authorization": f"Bearer {VIEWER_KEY}"})
            ).status_code == 403  # admin only


async def defined_elsewhere(client, definer, reader) -> tuple[str, str, str]:  # type: ignore[no-untyped-def]
    """A source defined through one process, after another cached its name as unknown (for
    30 s): the other accepts webhooks to it within 5 s. (tenant, name, the other's URL)."""
    tenant, name = new_tenant(), f"s{uuid.uuid4().hex[:8]}"
    body = b'{"n": 1}'
    url = f"{reader.url}/tenants/{tenant}/webhooks/{name}"
    assert (await client.post(url, content=body, headers={"X-Token": "t"})).status_code == 404
    await define(client, definer, tenant, name,
                 {"verification": {"type": "token", "header": "X-Token"}}, "t")
    deadline = time.monotonic() + 5
    while (r := await client.post(url, content=body, headers={"X-Token": "t"})).status_code != 202:
        assert time.monotonic() < deadline, r.text
        await asyncio.sleep(0.05)
    return tenant, name, url


async def test_every_ingest_process_sees_a_new_source_at_once(client, ingest_server,
                                                             start_server):
    other = start_server("ingest", database_url=ingest_server.database_url)
    tenant, name, url = await defined_elsewhere(client, ingest_server, other)
    body = b'{"n": 1}'
    r = await client.delete(f"{ingest_server.url}/admin/tenants/{tenant}/sources/{name}",
                            headers=ADMIN)
    assert r.status_code == 204
    deadline = time.monotonic() + 5
    while (await client.post(url, content=body, headers={"X-Token": "t"})).status_code != 404:
        assert time.monotonic() < deadline


async def test_names_no_source_could_have_cost_no_lookup_and_no_memory(client, start_server):
    """Unauthenticated requests to 64 KB source names used to cost a query each and a
    cache entry of that size each (+333 MiB; the 50,000-entry cap was about 5.4 GiB). A name
    is checked against the source-name pattern before any lookup now; NUL in one was a 500."""
    import asyncio

    import asyncpg

    from tests.support import postgres_admin_url

    server = start_server("ingest")
    database = server.database_url.rsplit("/", 1)[1]
    tenant = new_tenant()

    def rss_kib() -> int:  # granian's main process and its workers
        children = [int(p) for p in open(
            f"/proc/{server.process.pid}/task/{server.process.pid}/children").read().split()]
        total = 0
        for pid in [server.process.pid, *children]:
            status = open(f"/proc/{pid}/status").read()
            total += int(status.split("VmRSS:")[1].split()[0])
        return total

    async def commits() -> int:
        conn = await asyncpg.connect(postgres_admin_url())
        try:
            return int(await conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", database))
        finally:
            await conn.close()

    limits = asyncio.Semaphore(32)

    async def probe(i: int) -> tuple[int, str]:
        name = f"{i:05d}" + "x" * 65_000
        async with limits:
            r = await client.post(f"{server.url}/tenants/{tenant}/webhooks/{name}", content=b"{}")
        return r.status_code, r.json()["code"]

    # The first thousand such requests grow the server's buffers and allocator arenas by
    # about 80 MiB whatever the route (a plain 404 path too); after that it stays flat.
    assert set(await asyncio.gather(*(probe(i) for i in range(1000)))) == {
        (404, "unknown_source")}
    before_rss, before_commits = rss_kib(), await commits()
    answers = await asyncio.gather(*(probe(i) for i in range(1000, 3000)))
    assert set(answers) == {(404, "unknown_source")}
    await asyncio.sleep(1)  # pg_stat_database is updated by each backend within a second
    grew_kib = rss_kib() - before_rss
    queries = await commits() - before_commits
    print(f"RSS grew {grew_kib} KiB; {queries} transactions for 2,000 requests")
    assert queries < 200, queries  # was 2,000 lookups
    assert grew_kib < 64 * 1024, grew_kib  # was about 220 MiB (333 for 3,000)

    for name in ("a%00b", "UPPER%2F..", "-leading", "x" * 65):
        r = await client.post(f"{server.url}/tenants/{tenant}/webhooks/{name}", content=b"{}")
        assert r.status_code == 404 and r.json()["code"] == "unknown_source", (name, r.text)
        r = await client.put(f"{server.url}/admin/tenants/{tenant}/secrets/{name}",
                             headers=ADMIN, json={"secret": "s"})
        assert r.status_code == 404 and r.json()["code"] == "unknown_source", (name, r.text)


async def test_a_new_source_is_seen_at_once_after_the_listener_lost_its_connection(
        client, ingest_server, start_server, db):
    """The one LISTEN connection of a process comes back after PostgreSQL cut it (a restart,
    a failover, pg_terminate_backend): a change made afterwards reaches the cache at once, not
    when its 30 s TTL runs out."""
    other = start_server("ingest", database_url=ingest_server.database_url)
    conn = await db(ingest_server.database_url)
    cut = await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'relayforge listener'")
    assert cut >= 2  # every process has one
    deadline = time.monotonic() + 10
    while "listener reconnected" not in other.log():
        assert time.monotonic() < deadline, other.log()[-2000:]
        await asyncio.sleep(0.05)
    await defined_elsewhere(client, ingest_server, other)
