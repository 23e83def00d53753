"""The admin API through a real server: the RBAC matrix for every route and role, API keys,
the audit log, tenant secret rotation, and the CLI bootstrap commands."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import orjson
import pytest

from relayforge.http.admin import ROUTES
from relayforge.roles import Role
from tests.support import (
    ADMIN_KEY,
    OPERATOR_KEY,
    ROOT,
    VIEWER_KEY,
    generic_body,
    new_tenant,
    post_generic,
    sign_generic,
)

KEYS = {Role.VIEWER: VIEWER_KEY, Role.OPERATOR: OPERATOR_KEY, Role.ADMIN: ADMIN_KEY}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def concrete(path: str) -> str:
    """A route's path with every parameter filled with a well-formed value, so an allowed role
    reaches the route's own work (a 404 for an id that does not exist), not a 400 on the path."""
    values = {"{job_id}": str(uuid.uuid4()), "{inbox_id}": str(uuid.uuid4()),
              "{tenant_id}": str(uuid.uuid4()), "{provider}": "generic",
              "{secret_id}": str(uuid.uuid4()), "{key_id}": str(uuid.uuid4()),
              "{destination_id}": str(uuid.uuid4()), "{delivery_id}": str(uuid.uuid4()),
              "{name}": "acme"}
    for k, v in values.items():
        path = path.replace(k, v)
    assert "{" not in path, f"a parameter concrete() does not fill: {path}"
    return path


def body_for(method: str, path: str) -> bytes | None:
    if path.endswith("/secrets/{provider}") and method == "PUT":
        return b'{"secret": "s3cret-for-rbac"}'
    if path == "/admin/api-keys" and method == "POST":
        return b'{"role": "viewer", "name": "rbac"}'
    if path == "/admin/jobs/reprocess":
        return b'{"limit": 1}'
    return None


@pytest.mark.parametrize("method,path,required", [(r.method, r.path, r.role) for r in ROUTES],
                         ids=[f"{r.method} {r.path}" for r in ROUTES])
async def test_rbac_matrix(client, ingest_server, method, path, required):
    url = ingest_server.url + concrete(path)
    content = body_for(method, path)
    for headers in ({}, bearer("not-a-key"), {"Authorization": "Basic YWRtaW46YWRtaW4="}):
        r = await client.request(method, url, headers=headers, content=content)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
    for role, key in KEYS.items():
        r = await client.request(method, url, headers=bearer(key), content=content)
        if not role.allows(required):
            assert r.status_code == 403 and r.json()["code"] == "forbidden", (role, r.text)
        else:
            assert r.status_code not in (401, 403, 500), (role, r.status_code, r.text)
            if r.status_code == 400:  # refused for its body or query, never for its path
                assert "must be a UUID" not in r.text, r.text


async def test_job_and_inbox_views_with_filters_and_cursor(client, ingest_server):
    tenant = new_tenant()
    docs = [(await post_generic(client, ingest_server, generic_body(), tenant)).json()
            for _ in range(5)]
    base = f"{ingest_server.url}/admin"
    page1 = (await client.get(f"{base}/jobs?tenant_id={tenant}&limit=3",
                              headers=bearer(VIEWER_KEY))).json()
    page2 = (await client.get(
        f"{base}/jobs?tenant_id={tenant}&limit=3&cursor={page1['next_cursor']}",
        headers=bearer(VIEWER_KEY))).json()
    ids = [j["id"] for j in page1["items"] + page2["items"]]
    assert ids == [d["job_id"] for d in reversed(docs)] and page2["next_cursor"] is None
    job = (await client.get(f"{base}/jobs/{docs[0]['job_id']}", headers=bearer(VIEWER_KEY))).json()
    assert set(job) == {"id", "tenant_id", "source", "event_type", "provider_event_id", "status",
                        "attempts", "max_attempts", "last_error", "created_at", "updated_at",
                        "first_inbox_id", "last_inbox_id"}
    assert job["status"] == "pending" and job["first_inbox_id"] == docs[0]["inbox_id"]
    # delivered once: its last delivery is its first (not stored, read back as such)
    assert job["last_inbox_id"] == docs[0]["inbox_id"]
    assert [(j["first_inbox_id"], j["last_inbox_id"]) for j in page1["items"]] == [
        (d["inbox_id"], d["inbox_id"]) for d in reversed(docs[2:])]
    filtered = (await client.get(f"{base}/jobs?status=succeeded&tenant_id={tenant}",
                                 headers=bearer(VIEWER_KEY))).json()
    assert filtered["items"] == []
    bad = await client.get(f"{base}/jobs?status=bogus", headers=bearer(VIEWER_KEY))
    assert bad.status_code == 400 and bad.json()["code"] == "bad_request"
    inbox = (await client.get(f"{base}/inbox?tenant_id={tenant}&accepted=true",
                              headers=bearer(VIEWER_KEY))).json()
    assert len(inbox["items"]) == 5
    row = (await client.get(f"{base}/inbox/{docs[0]['inbox_id']}",
                            headers=bearer(VIEWER_KEY))).json()
    assert row["body_base64"] and row["headers"]["content-type"] == "application/json"
    stats = (await client.get(f"{base}/stats?tenant_id={tenant}",
                              headers=bearer(VIEWER_KEY))).json()
    assert stats["jobs"]["pending"] == 5 and stats["inbox_last_24h"]["accepted"] == 5


async def test_event_type_filters_jobs(client, ingest_server):
    tenant = new_tenant()
    for event in ("order.paid", "order.refunded", "order.paid"):
        body = orjson.dumps({"event": event, "data": {"n": uuid.uuid4().hex}})
        assert (await post_generic(client, ingest_server, body, tenant)).status_code == 202
    r = await client.get(f"{ingest_server.url}/admin/jobs",
                         params={"tenant_id": tenant, "event_type": "order.paid"},
                         headers=bearer(VIEWER_KEY))
    assert r.status_code == 200
    assert [j["event_type"] for j in r.json()["items"]] == ["order.paid", "order.paid"]


async def test_jobs_by_provider_event_id_and_time_range(client, ingest_server):
    import datetime as dt

    tenant = new_tenant()
    for event_id in ("evt-a", "evt-b"):
        body = orjson.dumps({"event": "x", "data": {"n": uuid.uuid4().hex}})
        r = await client.post(f"{ingest_server.url}/webhooks/generic", content=body, headers={
            "X-Signature": sign_generic(body), "X-Tenant-Id": tenant, "X-Event-Id": event_id})
        assert r.status_code == 202
    url, viewer = f"{ingest_server.url}/admin/jobs", bearer(VIEWER_KEY)
    r = await client.get(url, params={"tenant_id": tenant, "provider_event_id": "evt-b"},
                         headers=viewer)
    assert [j["provider_event_id"] for j in r.json()["items"]] == ["evt-b"]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = await client.get(url, params={"tenant_id": tenant, "since": later}, headers=viewer)
    assert r.json()["items"] == []
    r = await client.get(url, params={"tenant_id": tenant, "until": later}, headers=viewer)
    assert len(r.json()["items"]) == 2
    for bad in ("0.5", "2026-13-01T00:00:00Z", "0000-00-00T00:00:00Z", "yesterday"):
        r = await client.get(url, params={"until": bad}, headers=viewer)
        assert r.status_code == 400 and "until" in r.json()["error"], bad


@pytest.mark.parametrize("query,field", [
    (b"limit=%C2%B2", "limit"),            # a superscript two: str.isdigit() says yes
    (b"limit=0", "limit"), (b"limit=501", "limit"), (b"limit=", "limit"),
    (b"tenant_id=null", "tenant_id"), (b"cursor=abc", "cursor"),
    (b"status=bogus", "status"), (b"source=", "source"), (b"event_type=a%00b", "event_type"),
    (b"source=%FF", "UTF-8"),              # percent-encoded bytes that are not UTF-8
    (b"stauts=queued", "stauts"),          # an unknown parameter is refused, not ignored
])
async def test_malformed_admin_queries_are_400_naming_the_field(ingest_server, query, field):
    host, port = ingest_server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /admin/jobs?" + query + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"Authorization: Bearer " + VIEWER_KEY.encode() + b"\r\n\r\n")
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), response[:300]
    doc = orjson.loads(body)
    assert doc["code"] == "bad_request" and field in doc["error"], doc
    assert "Traceback" not in ingest_server.log()


async def test_raw_bytes_that_are_not_utf8_are_400(ingest_server):
    """Refused by the HTTP server before the application sees them."""
    host, port = ingest_server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /admin/jobs?source=\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"Authorization: Bearer " + VIEWER_KEY.encode() + b"\r\n\r\n")
    response = await reader.read()
    writer.close()
    assert response.startswith(b"HTTP/1.1 400"), response[:300]


async def test_raw_utf8_in_a_query_is_read_as_text(ingest_server):
    host, port = ingest_server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write("GET /admin/jobs?source=évènement HTTP/1.1\r\nHost: x\r\n".encode()
                 + b"Connection: close\r\nAuthorization: Bearer " + VIEWER_KEY.encode()
                 + b"\r\n\r\n")
    response = await reader.read()
    writer.close()
    assert response.startswith(b"HTTP/1.1 200"), response[:300]


async def test_api_key_lifecycle_and_audit(client, ingest_server, db):
    base = f"{ingest_server.url}/admin/api-keys"
    created = await client.post(base, headers=bearer(ADMIN_KEY),
                                content=b'{"role": "operator", "name": "ci"}')
    assert created.status_code == 201
    key = created.json()["key"]
    listed = (await client.get(base, headers=bearer(ADMIN_KEY))).json()["items"]
    mine = [k for k in listed if k["id"] == created.json()["id"]]
    assert mine and "key" not in mine[0] and "key_hash" not in mine[0]
    # the new key works with its role: operator may reprocess, not manage keys
    jobs_url = f"{ingest_server.url}/admin/jobs"
    assert (await client.get(jobs_url, headers=bearer(key))).status_code == 200
    assert (await client.get(base, headers=bearer(key))).status_code == 403
    conn = await db(ingest_server.database_url)
    stored = await conn.fetchval("SELECT key_hash FROM admin_api_keys WHERE id = $1",
                                 uuid.UUID(created.json()["id"]))
    assert stored != key and len(stored) == 64
    assert (await client.delete(f"{base}/{created.json()['id']}",
                                headers=bearer(ADMIN_KEY))).status_code == 204
    assert (await client.get(jobs_url, headers=bearer(key))).status_code == 401
    actions = [r["action"] for r in await conn.fetch(
        "SELECT action FROM admin_audit_log WHERE target = $1 ORDER BY id", created.json()["id"])]
    assert actions == ["api_key.create", "api_key.revoke"]


async def _status_eventually(client, server, tenant, secret, expected, timeout=8.0):
    """Secret changes reach ingest through LISTEN/NOTIFY; allow a few seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = generic_body()
        r = await client.post(f"{server.url}/tenants/{tenant}/webhooks/generic", content=body,
                              headers={"X-Signature": sign_generic(body, secret)})
        if r.status_code == expected or asyncio.get_running_loop().time() > deadline:
            return r.status_code
        await asyncio.sleep(0.2)


async def test_secret_rotation_overlaps_until_the_old_one_is_retired(client, ingest_server, db):
    tenant = new_tenant()
    url = f"{ingest_server.url}/admin/tenants/{tenant}/secrets/generic"
    env_secret = "test-generic-secret"
    assert await _status_eventually(client, ingest_server, tenant, env_secret, 202) == 202
    first = await client.put(url, headers=bearer(ADMIN_KEY), content=orjson.dumps(
        {"secret": "tenant-old", "previous_expires_in_seconds": 0}))
    assert first.status_code == 201
    assert await _status_eventually(client, ingest_server, tenant, "tenant-old", 202) == 202
    # with no overlap asked for, the env secret the tenant had is refused at once
    assert await _status_eventually(client, ingest_server, tenant, env_secret, 401) == 401
    second = await client.put(url, headers=bearer(ADMIN_KEY), content=orjson.dumps(
        {"secret": "tenant-new", "previous_expires_in_seconds": 3600}))
    assert second.status_code == 201
    assert await _status_eventually(client, ingest_server, tenant, "tenant-new", 202) == 202
    assert await _status_eventually(client, ingest_server, tenant, "tenant-old", 202) == 202
    listed = (await client.get(url, headers=bearer(ADMIN_KEY))).json()["items"]
    assert [s["id"] for s in listed] == [second.json()["id"], first.json()["id"]]
    assert listed[1]["expires_at"] is not None and listed[0]["expires_at"] is None
    assert "tenant-old" not in orjson.dumps(listed).decode()
    conn = await db(ingest_server.database_url)
    for row in await conn.fetch(
            "SELECT ciphertext FROM tenant_provider_secrets WHERE tenant_id = $1",
            uuid.UUID(tenant)):
        assert b"tenant-" not in bytes(row["ciphertext"])  # encrypted at rest
    gone = await client.delete(f"{url}/{first.json()['id']}", headers=bearer(ADMIN_KEY))
    assert gone.status_code == 204
    assert await _status_eventually(client, ingest_server, tenant, "tenant-old", 401) == 401
    assert await _status_eventually(client, ingest_server, tenant, "tenant-new", 202) == 202
    missing = await client.delete(f"{url}/{first.json()['id']}", headers=bearer(ADMIN_KEY))
    assert missing.status_code == 404
    audit = [(r["action"], r["key_source"], r["role"]) for r in await conn.fetch(
        "SELECT action, key_source, role FROM admin_audit_log WHERE target = $1 ORDER BY id",
        f"{tenant}/generic")]
    assert audit == [("secret.set", "fallback", "admin")] * 2 + [
        ("secret.delete", "fallback", "admin")]


async def test_the_first_rotation_keeps_the_env_secret_for_the_overlap(client, ingest_server):
    """A tenant verified with the shared env secret until now gets its first own secret with
    the default overlap: both verify until the overlap ends (rotate without downtime)."""
    tenant = new_tenant()
    url = f"{ingest_server.url}/admin/tenants/{tenant}/secrets/generic"
    env_secret = "test-generic-secret"
    assert await _status_eventually(client, ingest_server, tenant, env_secret, 202) == 202
    r = await client.put(url, headers=bearer(ADMIN_KEY), content=b'{"secret": "own-secret"}')
    assert r.status_code == 201
    assert await _status_eventually(client, ingest_server, tenant, "own-secret", 202) == 202
    assert await _status_eventually(client, ingest_server, tenant, env_secret, 202) == 202
    listed = (await client.get(url, headers=bearer(ADMIN_KEY))).json()["items"]
    assert len(listed) == 2 and listed[0]["id"] == r.json()["id"]
    assert listed[0]["expires_at"] is None and listed[1]["expires_at"] is not None


async def test_retiring_the_last_secret_never_brings_back_the_env_secret(client, ingest_server):
    tenant = new_tenant()
    url = f"{ingest_server.url}/admin/tenants/{tenant}/secrets/generic"
    env_secret = "test-generic-secret"
    r = await client.put(url, headers=bearer(ADMIN_KEY), content=b'{"secret": "only-one"}')
    for item in (await client.get(url, headers=bearer(ADMIN_KEY))).json()["items"]:
        assert (await client.delete(f"{url}/{item['id']}", headers=bearer(ADMIN_KEY))
                ).status_code == 204
    assert r.status_code == 201
    assert await _status_eventually(client, ingest_server, tenant, "only-one", 401) == 401
    assert await _status_eventually(client, ingest_server, tenant, env_secret, 401) == 401
    again = await client.put(url, headers=bearer(ADMIN_KEY), content=b'{"secret": "new-one"}')
    assert again.status_code == 201
    assert await _status_eventually(client, ingest_server, tenant, "new-one", 202) == 202
    assert await _status_eventually(client, ingest_server, tenant, env_secret, 401) == 401


async def test_rotation_with_zero_overlap_retires_the_old_secret_at_once(client, ingest_server):
    tenant = new_tenant()
    url = f"{ingest_server.url}/admin/tenants/{tenant}/secrets/generic"
    await client.put(url, headers=bearer(ADMIN_KEY), content=b'{"secret": "a-secret"}')
    await client.put(url, headers=bearer(ADMIN_KEY),
                     content=b'{"secret": "b-secret", "previous_expires_in_seconds": 0}')
    assert await _status_eventually(client, ingest_server, tenant, "a-secret", 401) == 401
    assert await _status_eventually(client, ingest_server, tenant, "b-secret", 202) == 202


@pytest.mark.parametrize("body", [b"", b"[]", b'{"secret": ""}', b'{"secret": 5}',
                                  b'{"secret": "x", "previous_expires_in_seconds": -1}',
                                  b'{"secret": "x", "other": 1}', b"{not json"])
async def test_bad_secret_bodies_are_400(client, ingest_server, body):
    r = await client.put(f"{ingest_server.url}/admin/tenants/{new_tenant()}/secrets/generic",
                         headers=bearer(ADMIN_KEY), content=body)
    assert r.status_code == 400 and r.json()["code"] == "bad_request"


async def test_cli_keys_create_and_secrets_set(client, ingest_server):
    env = {**os.environ, "DATABASE__URL": ingest_server.database_url}
    out = subprocess.run([sys.executable, "-m", "relayforge", "keys", "create", "--role", "viewer"],
                         env=env, capture_output=True, text=True, cwd=ROOT, check=True)
    key = out.stdout.strip()
    assert key.startswith("rfk_")
    stats_url = f"{ingest_server.url}/admin/stats"
    assert (await client.get(stats_url, headers=bearer(key))).status_code == 200
    tenant = new_tenant()
    subprocess.run([sys.executable, "-m", "relayforge", "secrets", "set", "--tenant", tenant,
                    "--provider", "generic"], input="from-the-shell\n", env=env, text=True,
                   capture_output=True, cwd=ROOT, check=True)
    assert await _status_eventually(client, ingest_server, tenant, "from-the-shell", 202) == 202
