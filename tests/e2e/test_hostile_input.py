"""Hostile values at every admin and console route through a real server: NUL and other control
characters, huge and non-decimal numbers, long strings and deep nesting, in path parameters,
query strings, forms and JSON bodies. Each gets a 4xx in the contract's shape, never a 5xx."""

from __future__ import annotations

import re
import uuid
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayforge.console.pages import ROUTES as CONSOLE_ROUTES
from relayforge.http.admin import ROUTES as ADMIN_ROUTES
from tests.support import ADMIN_KEY, generic_body, new_tenant, post_generic

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
HOSTILE_TEXT = ["\x00", "a\x00b", "gen\x00eric", "\r\n", "\x1b[31m", "\x7f", "\u0085", "%00",
                "9" * 30, "-" + "9" * 30, "1e2", "1.0", "-1", "0", "NaN", "x" * 5000, "null",
                "../../etc/passwd", "'; DROP TABLE jobs; --", "\ud7ff\ue000", "😀", ""]
hostile_text = st.sampled_from(HOSTILE_TEXT) | st.text(max_size=40)


def deep(levels: int, leaf: object = 1) -> object:
    for i in range(levels):
        leaf = [leaf] if i % 2 else {"a": leaf}
    return leaf


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.sampled_from(HOSTILE_TEXT) | st.sampled_from([deep(300), deep(300, "\x00")]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["url", "secret", "role", "name", "filter", "headers", "limit",
                         "tenant_id", "source", "event_type", "previous_expires_in_seconds",
                         "event_types", "data", "verification", "payload", "timeout_ms"]),
        children, max_size=4),
    max_leaves=8)
PARAMETERS = ["status", "tenant_id", "source", "event_type", "provider_event_id", "since",
              "until", "cursor", "limit", "accepted", "destination_id", "job_id", "provider",
              "secret_id", "key", "role", "name", "secret", "previous_expires_in_seconds", "csrf"]


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers("ingest")


def _sign_in(server) -> tuple[dict[str, str], str]:
    """A console session's cookie and CSRF token."""
    with httpx.Client(base_url=server.url) as c:
        r = c.post("/console/login", data={"key": ADMIN_KEY})
        assert r.status_code == 303
        cookie = dict(r.cookies)
        page = c.get("/console/secrets")  # the client keeps the cookie
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    return cookie, csrf.group(1)


@pytest.fixture(scope="module")
def console_cookie(server):
    return _sign_in(server)


@pytest.fixture
def console_cookie_for():
    return _sign_in


def _path(template: str, values: list[str]) -> str:
    parts = iter(values)
    return re.sub(r"\{[^}]+\}", lambda _: quote(next(parts, "x"), safe=""), template)


def _refusal_in_shape(r: httpx.Response, console: bool) -> None:
    assert r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text[:300])
    if "content-type" not in r.headers and r.status_code >= 400:
        # a header value with control characters, refused by the HTTP server before the app
        assert r.status_code == 400 and not r.content
        return
    if r.status_code >= 400 and not console:
        assert r.headers["content-type"] == "application/json"
        assert {"error", "code"} <= set(r.json()), r.text[:300]


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(ADMIN_ROUTES), path=st.lists(hostile_text | st.just(new_tenant()),
                                                          min_size=3, max_size=3),
       query=st.dictionaries(st.sampled_from(PARAMETERS), hostile_text, max_size=3),
       body=json_values)
def test_every_admin_route_refuses_hostile_values_with_a_4xx(server, route, path, query, body):
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as c:
        try:
            r = c.request(route.method, _path(route.path, path), params=query,
                          json=body if route.method != "GET" else None)
        except (httpx.LocalProtocolError, httpx.InvalidURL, UnicodeEncodeError):
            return  # the client refused to send it
    _refusal_in_shape(r, console=False)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from([r for r in CONSOLE_ROUTES if r.handler != "logout"]),
       path=st.lists(hostile_text | st.just(str(uuid.uuid4())), min_size=2, max_size=2),
       values=st.dictionaries(st.sampled_from(PARAMETERS), hostile_text, max_size=4),
       json_accept=st.booleans())
def test_every_console_route_refuses_hostile_values_with_a_4xx(server, console_cookie, route,
                                                              path, values, json_accept):
    cookie, csrf = console_cookie
    headers = {"Accept": "application/json"} if json_accept else {}
    with httpx.Client(base_url=server.url, cookies=cookie, timeout=30) as c:
        try:
            url = _path(route.path, path)
            if route.method == "GET":
                r = c.get(url, params=values, headers=headers)
            else:
                r = c.post(url, data={**values, "csrf": csrf}, headers=headers)
        except (httpx.LocalProtocolError, httpx.InvalidURL, UnicodeEncodeError):
            return
    _refusal_in_shape(r, console=True)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(source=hostile_text | st.sampled_from(["generic", "github", "stripe", "slack", "acme"]),
       tenant=hostile_text | st.just(new_tenant()), in_path=st.booleans(), body=json_values,
       headers=st.dictionaries(st.sampled_from(["X-Signature", "X-Event-Id",
                                                "X-Signed-Event-Id", "X-GitHub-Event",
                                                "Stripe-Signature", "Content-Type"]),
                               hostile_text, max_size=3))
def test_the_webhook_routes_refuse_hostile_values_with_a_4xx(server, source, tenant, in_path,
                                                            body, headers):
    import json

    path = (f"/tenants/{quote(tenant, safe='')}/webhooks/{quote(source, safe='')}" if in_path
            else f"/webhooks/{quote(source, safe='')}")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        try:
            r = c.post(path, content=json.dumps(body).encode(),
                       headers={**headers, **({} if in_path else {"X-Tenant-Id": tenant})})
        except (httpx.LocalProtocolError, httpx.InvalidURL, UnicodeEncodeError):
            return
    _refusal_in_shape(r, console=False)


async def test_the_reported_500s_are_4xx_in_the_contracts_shape(client, server, console_cookie):
    """Each of the 13 tracebacks a hostile tester found, and the lax numbers, one by one."""
    tenant = new_tenant()
    api = [
        ("POST", "/webhooks/a%00b", {}, None, 404),
        ("PUT", f"/admin/tenants/{tenant}/secrets/gen%00eric", {}, {"secret": "x"}, 404),
        ("GET", "/admin/jobs", {"limit": "1e2"}, None, 400),
        ("GET", "/admin/jobs", {"limit": "1.0"}, None, 400),
        ("GET", "/admin/inbox", {"cursor": "9" * 30}, None, 400),
        ("PUT", f"/admin/tenants/{tenant}/secrets/generic", {},
         {"secret": "x", "previous_expires_in_seconds": 10**30}, 400),
        ("POST", "/admin/api-keys", {}, {"role": "viewer", "name": "a\x00b"}, 400),
        ("POST", f"/admin/tenants/{tenant}/destinations", {},
         {"url": "https://example.com", "filter": {"data": {"a": deep(300)}}}, 400),
        ("POST", "/admin/jobs/reprocess", {}, {"event_type": deep(300)}, 400),
    ]
    for method, path, params, body, status in api:
        r = await client.request(method, server.url + path, params=params, json=body,
                                 headers=ADMIN)
        assert r.status_code == status, (path, params, r.text)
        assert {"error", "code"} <= set(r.json())

    cookie, csrf = console_cookie
    signed_in = httpx.AsyncClient(cookies=cookie, timeout=30)
    console = [
        ("GET", "/console/jobs", {"event_type": "\x00"}),
        ("GET", "/console/jobs", {"source": "\x00"}),
        ("GET", "/console/jobs", {"provider_event_id": "\x00"}),
        ("GET", "/console/dead-letters/confirm", {"event_type": "\x00"}),
        ("GET", "/console/audit", {"cursor": "9" * 30}),
        ("GET", "/console/secrets", {"tenant_id": tenant, "provider": "gen\x00eric"}),
        ("POST", "/console/secrets/rotate", {"tenant_id": tenant, "provider": "generic",
                                             "secret": "x",
                                             "previous_expires_in_seconds": "9" * 30}),
        ("POST", "/console/api-keys", {"role": "viewer", "name": "a\x00b"}),
        ("POST", "/console/dead-letters/reprocess", {"event_type": "\x00"}),
    ]
    for method, path, values in console:
        if method == "GET":
            r = await signed_in.get(server.url + path, params=values)
        else:
            r = await signed_in.post(server.url + path, data={**values, "csrf": csrf})
        assert r.status_code == 400, (path, values, r.text[:300])
        assert "Not done" in r.text  # the console's own error page, not a traceback
    await signed_in.aclose()


async def test_the_console_rotates_secrets_as_the_api_does(client, server, console_cookie):
    """The console's rotation dropped the env secret at once (the API keeps it for the
    overlap) and accepted any source name; both go through one implementation now."""

    cookie, csrf = console_cookie
    signed_in = httpx.AsyncClient(cookies=cookie, timeout=30)
    tenant = new_tenant()
    assert (await post_generic(client, server, generic_body(), tenant)).status_code == 202
    r = await signed_in.post(f"{server.url}/console/secrets/rotate", data={
        "csrf": csrf, "tenant_id": tenant, "provider": "generic", "secret": "console-new",
        "previous_expires_in_seconds": "3600"})
    assert r.status_code == 303, r.text[:300]
    # the env secret it was verified with until now still verifies, for the overlap
    assert (await post_generic(client, server, generic_body(), tenant)).status_code == 202
    listed = (await client.get(f"{server.url}/admin/tenants/{tenant}/secrets/generic",
                               headers=ADMIN)).json()["items"]
    assert len(listed) == 2 and sum(1 for s in listed if s["expires_at"]) == 1
    r = await signed_in.post(f"{server.url}/console/secrets/rotate", data={
        "csrf": csrf, "tenant_id": tenant, "provider": "no-such-source", "secret": "x"})
    assert r.status_code == 404 and "unknown provider" in r.text
    await signed_in.aclose()


async def test_a_job_page_shows_bounded_previews_and_streams_a_whole_body_on_request(
        client, start_server, console_cookie_for):
    """Twenty duplicates of an 18 MiB GitHub delivery: opening the job read every body whole
    (+413 MiB and a 4 s stall of the event loop). The page now reads 16 KiB of each; the whole
    body is a download, streamed a chunk at a time."""
    import asyncio

    import orjson

    from tests.support import sign_github

    server = start_server("ingest")
    tenant = new_tenant()
    body = orjson.dumps({"action": "opened", "pad": "x" * (8 << 20)})
    headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": str(uuid.uuid4()),
               "X-Hub-Signature-256": sign_github(body), "Content-Type": "application/json"}
    url = f"{server.url}/tenants/{tenant}/webhooks/github"
    answers = [await client.post(url, content=body, headers=headers) for _ in range(10)]
    assert [a.status_code for a in answers] == [202] * 10
    job_id = answers[0].json()["job_id"]
    assert {a.json()["job_id"] for a in answers} == {job_id}  # one job, ten requests

    def rss_kib() -> int:  # granian's main process and its workers
        pid = server.process.pid
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
        return sum(int(open(f"/proc/{p}/status").read().split("VmRSS:")[1].split()[0])
                   for p in [pid, *children])

    async with httpx.AsyncClient(cookies=console_cookie_for(server)[0], timeout=60) as console:
        await console.get(f"{server.url}/console/overview")  # warm: templates, pool
        before = rss_kib()
        page = await console.get(f"{server.url}/console/jobs/{job_id}")
        await asyncio.sleep(0.5)
        grew = rss_kib() - before
        assert page.status_code == 200
        assert page.text.count("the whole body") == 10
        assert f"({len(body)} bytes)" in page.text
        print(f"RSS grew {grew} KiB opening the job")
        assert grew < 48 * 1024, grew  # ten whole 8 MiB bodies were about 300 MiB
        inbox_id = answers[3].json()["inbox_id"]
        whole = await console.get(f"{server.url}/console/inbox/{inbox_id}/body")
        assert whole.status_code == 200 and whole.content == body
        assert whole.headers["content-security-policy"].startswith("default-src 'none'")
        missing = await console.get(f"{server.url}/console/inbox/{uuid.uuid4()}/body")
        assert missing.status_code == 404


async def test_an_unknown_address_answers_with_the_consoles_security_headers(client, server):
    for method, path in (("GET", "/console/nosuch"), ("GET", "/nosuch/<script>"),
                         ("DELETE", "/console/login")):
        r = await client.request(method, server.url + path)
        assert r.status_code in (404, 405), (path, r.status_code)
        assert r.headers["content-security-policy"].startswith("default-src 'none'"), path
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert {"error", "code"} <= set(r.json())
