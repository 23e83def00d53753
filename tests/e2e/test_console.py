"""The operator console in a real browser (Debian's headless Chromium, driven by Playwright)
against a real server on PostgreSQL: sign in, find a dead-lettered job by its provider event id,
reprocess it and watch it succeed without a reload; a viewer has no reprocess control and a
forged POST is refused; hostile webhook content renders inert; no page violates the CSP.
Screenshots of every page go to the test's output directory (and, with
RELAYFORGE_CONSOLE_SCREENSHOTS=<dir>, there too)."""

from __future__ import annotations

import http.server
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support import ADMIN_KEY, VIEWER_KEY, new_tenant, sign_generic

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="Debian's chromium is not installed (CI installs it)")
HOSTILE = '<script>window.pwned=1</script>"><img src=x onerror="window.pwned=2">'


@pytest.fixture(scope="module")
def console_server(module_servers):
    return module_servers("all", WORKER__ENABLE_TEST_FAULTS="true", WORKER__MAX_ATTEMPTS="2",
                          WORKER__BACKOFF_BASE_MS="20", WORKER__BACKOFF_MAX_MS="100",
                          RELAY__POLL_INTERVAL_MS="200",
                          DESTINATIONS__ALLOW_PRIVATE_NETWORKS="true")


class Receiver:
    """A tenant's service on loopback (a thread: these tests drive the browser synchronously):
    answers `status`, counts what it is sent."""

    def __init__(self) -> None:
        outer = self
        self.status, self.received = 200, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.received += 1
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def admin_api(server, method: str, path: str, **kwargs):  # type: ignore[no-untyped-def]
    r = httpx.request(method, f"{server.url}{path}",
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}, **kwargs)
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


def dead_lettered_delivery(server, receiver: Receiver) -> tuple[str, str, str]:
    """A destination whose service answered 503 until the delivery ran out of attempts:
    (tenant, destination id, delivery id)."""
    tenant = new_tenant()
    receiver.status = 503
    destination = admin_api(server, "POST", f"/admin/tenants/{tenant}/destinations",
                            json={"url": f"{receiver.url}/hook"})["id"]
    send(server, {"event": "order.paid", "data": {"n": 1}}, tenant, f"evt-{uuid.uuid4().hex}")
    deadline = time.monotonic() + 30
    while True:
        items = admin_api(server, "GET", "/admin/deliveries",
                          params={"destination_id": destination})["items"]
        if items and items[0]["status"] == "dead_lettered":
            return tenant, destination, items[0]["id"]
        assert time.monotonic() < deadline, items
        time.sleep(0.1)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "CI must install Debian's chromium"
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path):
    extra = os.environ.get("RELAYFORGE_CONSOLE_SCREENSHOTS")

    def take(page, name: str) -> None:
        page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(extra) / f"{name}.png"), full_page=False)
    return take


def watch_csp(page) -> list[str]:
    """Console messages about the Content-Security-Policy (a violation logs one)."""
    seen: list[str] = []
    page.on("console", lambda m: seen.append(m.text)
            if "Content Security Policy" in m.text or "Content-Security-Policy" in m.text
            else None)
    return seen


def sign_in(browser, server, key: str):
    context = browser.new_context()
    page = context.new_page()
    csp = watch_csp(page)
    page.goto(f"{server.url}/console")
    assert page.url.endswith("/console/login")
    page.get_by_label("Admin API key (any role)").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/overview")
    return context, page, csp


def search_and_open(page, listing: str, field: str, value: str, item: str, path: str):  # type: ignore[no-untyped-def]
    """From the nav: a list, searched by one field, and the item found opened; its status."""
    page.get_by_role("link", name=listing, exact=True).click()
    page.get_by_label(field).fill(value)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=item).click()
    page.wait_for_url(f"**{path}")
    return page.locator("[data-status]")


def send(server, body: dict, tenant: str, event_id: str) -> str:
    raw = orjson.dumps(body)
    r = httpx.post(f"{server.url}/webhooks/generic", content=raw, headers={
        "X-Signature": sign_generic(raw), "X-Tenant-Id": tenant, "X-Event-Id": event_id,
        "Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def wait_status(server, job_id: str, status: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.get(f"{server.url}/admin/jobs/{job_id}",
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        if r.json()["status"] == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never became {status}")


def test_find_a_dead_letter_by_provider_event_id_and_reprocess_it(browser, console_server,
                                                                   shots):
    tenant, event_id = new_tenant(), f"evt-{uuid.uuid4().hex[:10]}"
    job_id = send(console_server, {"event": "order.paid", "data": {"n": 1},
                                   "fail_until_attempt": 2}, tenant, event_id)
    wait_status(console_server, job_id, "dead_lettered")
    context, page, csp = sign_in(browser, console_server, ADMIN_KEY)
    shots(page, "overview")
    status = search_and_open(page, "Dead letters", "Provider event id", event_id, job_id,
                             f"/console/jobs/{job_id}")
    assert status.inner_text() == "dead_lettered"
    shots(page, "job-dead-lettered")
    assert "test fault" in page.locator("[data-error]").inner_text()
    page.evaluate("window.stillHere = true")  # gone if the page reloads
    page.get_by_role("button", name="Reprocess").click()
    playwright_api.expect(status).to_have_text("succeeded", timeout=30_000)  # no reload
    # what stood beside the old status follows it: the attempt, the error, the message
    playwright_api.expect(page.locator("[data-attempts]")).to_have_text("attempt 3 of 4")
    playwright_api.expect(page.locator("[data-error]")).to_have_text("\u2014")
    playwright_api.expect(page.locator("[data-message]")).to_have_text("Done: succeeded.")
    assert page.evaluate("window.stillHere") is True
    assert page.url.endswith(f"/console/jobs/{job_id}")
    shots(page, "job-reprocessed")
    page.reload()  # the timeline says who reprocessed it
    assert "job.reprocess by admin (fallback key)" in page.locator("ol").inner_text()
    for name in ("Events and jobs", "Deliveries", "Destinations", "Secrets", "API keys",
                 "Audit log", "Overview"):
        with page.expect_navigation() as navigation:
            page.get_by_role("link", name=name, exact=True).click()
        assert navigation.value.ok, name
        assert page.get_by_role("heading", level=1).inner_text() in (name, "Overview")
        shots(page, name.lower().replace(" ", "-"))
    assert csp == [], csp
    context.close()


def test_a_viewer_sees_no_reprocess_control_and_a_forged_post_is_refused(browser,
                                                                         console_server):
    tenant, event_id = new_tenant(), f"evt-{uuid.uuid4().hex[:10]}"
    job_id = send(console_server, {"event": "order.paid", "data": {},
                                   "force_permanent_fail": True}, tenant, event_id)
    wait_status(console_server, job_id, "dead_lettered")
    context, page, csp = sign_in(browser, console_server, VIEWER_KEY)
    page.goto(f"{console_server.url}/console/jobs/{job_id}")
    assert page.locator("[data-status]").inner_text() == "dead_lettered"
    assert page.get_by_role("button", name="Reprocess").count() == 0
    assert page.get_by_role("link", name="API keys").count() == 0  # admin pages not offered
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    forged = page.evaluate("""async ([url, token]) => {
        const r = await fetch(url, {method: "POST", headers: {"X-CSRF-Token": token,
                                    "Accept": "application/json"}});
        return r.status; }""", [f"/console/jobs/{job_id}/reprocess", token])
    assert forged == 403  # the role is checked on the server, whatever the page shows
    no_token = page.evaluate("""async (url) => {
        const r = await fetch(url, {method: "POST", headers: {"Accept": "application/json"}});
        return r.status; }""", f"/console/jobs/{job_id}/reprocess")
    assert no_token == 403
    r = httpx.get(f"{console_server.url}/console/api-keys", follow_redirects=False,
                  cookies={c["name"]: c["value"] for c in context.cookies()})
    assert r.status_code == 403
    assert csp == [], csp
    context.close()
    wait_status(console_server, job_id, "dead_lettered")  # nothing was reprocessed


def test_hostile_webhook_content_renders_inert(browser, console_server, shots):
    tenant = new_tenant()
    job_id = send(console_server, {"event": "xss.test", "data": {"note": HOSTILE}}, tenant,
                  f"evt-{uuid.uuid4().hex[:10]}")
    wait_status(console_server, job_id, "succeeded")
    context, page, csp = sign_in(browser, console_server, ADMIN_KEY)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{console_server.url}/console/jobs/{job_id}")
    page.wait_for_load_state("load")
    shown = page.locator("pre").last.inner_text()  # the body, pretty-printed JSON
    assert "<script>window.pwned=1</script>" in shown and "<img src=x onerror=" in shown
    assert page.evaluate("window.pwned") is None  # and never run
    assert page.locator("img[src='x']").count() == 0
    assert dialogs == []
    shots(page, "job-hostile-content")
    assert csp == [], csp
    context.close()


def test_security_headers_and_session_cookie(console_server):
    r = httpx.get(f"{console_server.url}/console/login")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    r = httpx.post(f"{console_server.url}/console/login", data={"key": ADMIN_KEY},
                   follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=" in cookie
    bad = httpx.post(f"{console_server.url}/console/login", data={"key": "nope"})
    assert bad.status_code == 401 and "not valid" in bad.text
    assert httpx.get(f"{console_server.url}/console/overview",
                     follow_redirects=False).status_code == 303  # no session: to sign-in
    metrics = httpx.get(f"{console_server.url}/metrics").text
    assert "console_csp_violations_total 0.0" in metrics  # no page reported a violation


def test_admin_pages_act_through_the_same_rules(browser, console_server, shots):
    """API keys, secrets, destinations: each action done in the console, seen in the audit."""
    tenant = new_tenant()
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = httpx.post(f"{console_server.url}/admin/tenants/{tenant}/destinations", headers=admin,
                   json={"url": "https://hooks.example.com/in", "name": "orders"})
    assert r.status_code == 201, r.text
    context, page, csp = sign_in(browser, console_server, ADMIN_KEY)

    page.goto(f"{console_server.url}/console/api-keys")
    page.get_by_label("Name").fill("on-call laptop")
    page.get_by_label("Role").select_option("viewer")
    page.get_by_role("button", name="Create").click()
    created = page.locator("code.secret").inner_text()
    assert created.startswith("rfk_") or len(created) > 20  # shown once, here
    page.goto(f"{console_server.url}/console/api-keys")
    assert created not in page.content()  # never again
    row = page.locator("tr", has_text="on-call laptop")
    row.get_by_role("button", name="Revoke").click()
    page.wait_for_load_state("load")
    assert httpx.get(f"{console_server.url}/admin/jobs",
                     headers={"Authorization": f"Bearer {created}"}).status_code == 401

    page.goto(f"{console_server.url}/console/secrets?tenant_id={tenant}&provider=generic")
    page.get_by_label("New secret").fill("console-rotated-secret")
    page.get_by_role("button", name="Make it current").click()
    page.wait_for_load_state("load")
    # the new one current, and the env secret the tenant was verified with until now kept for
    # the overlap (as the admin API does)
    assert page.locator("tbody tr").count() == 2 and "current" in page.locator("tbody").inner_text()
    shots(page, "secrets-rotated")
    for _ in range(2):
        page.get_by_role("button", name="Retire").first.click()
        page.wait_for_load_state("load")
    assert "No stored secrets" in page.locator("tbody").inner_text()

    page.goto(f"{console_server.url}/console/destinations?tenant_id={tenant}")
    assert "https://hooks.example.com/in" in page.content()
    page.get_by_role("button", name="Disable").click()
    page.wait_for_load_state("load")
    assert "no (by an admin)" in page.locator("tbody").inner_text()
    page.get_by_role("button", name="Enable").click()
    page.wait_for_load_state("load")
    page.get_by_role("button", name="Rotate secret").click()
    new_secret = page.locator("code.secret").inner_text()
    assert new_secret.startswith("whsec_")
    shots(page, "destinations")

    page.goto(f"{console_server.url}/console/audit")
    audit = page.locator("tbody").inner_text()
    for action in ("api_key.create", "api_key.revoke", "secret.set", "secret.delete",
                   "destination.update",
                   "destination.rotate_secret"):
        assert action in audit, action
    assert csp == [], csp
    context.close()


def test_reprocess_all_that_match_after_a_confirmation_that_says_how_many(browser,
                                                                          console_server):
    tenant = new_tenant()
    jobs = [send(console_server, {"event": "bulk.case", "data": {"n": i},
                                  "fail_until_attempt": 2}, tenant, f"evt-{uuid.uuid4().hex}")
            for i in range(3)]
    for job_id in jobs:
        wait_status(console_server, job_id, "dead_lettered")
    context, page, csp = sign_in(browser, console_server, ADMIN_KEY)
    page.goto(f"{console_server.url}/console/dead-letters?tenant_id={tenant}")
    assert page.locator("tbody tr").count() == 3
    page.get_by_role("button", name="Reprocess all that match…").click()
    assert "3 dead-lettered jobs match" in page.locator(".notice").inner_text()
    page.get_by_role("button", name="Reprocess 3").click()
    assert "3 job(s) are being reprocessed" in page.locator("[role=status]").inner_text()
    for job_id in jobs:
        wait_status(console_server, job_id, "succeeded")
    page.goto(f"{console_server.url}/console/jobs/{jobs[0]}")  # each says who, in its timeline
    assert "job.reprocess bulk by admin (fallback key)" in page.locator("ol").inner_text()
    assert csp == [], csp
    context.close()


def test_the_overview_refreshes_without_a_reload(browser, console_server):
    context, page, _ = sign_in(browser, console_server, VIEWER_KEY)
    # what the refused line counts is what it says (unverified requests are not recorded)
    assert "refused after their signature" in page.locator("main").inner_text()
    # its counts lead to their lists
    with page.expect_navigation():
        page.get_by_role("link", name="Dead-lettered deliveries").click()
    assert page.url.endswith("/console/deliveries?status=dead_lettered")
    page.go_back()
    # and on a phone's width the chart fits the screen
    page.set_viewport_size({"width": 390, "height": 844})
    chart = page.locator("svg.chart").bounding_box()
    assert chart is not None and chart["x"] + chart["width"] <= 390, chart
    page.evaluate("window.stillHere = true")  # gone if the page reloads
    with page.expect_response(lambda r: r.url.endswith("/console/overview/live"),
                              timeout=20_000) as refreshed:
        pass
    assert refreshed.value.ok
    assert page.evaluate("window.stillHere") is True
    context.close()


def test_find_a_dead_lettered_delivery_by_destination_and_reprocess_it(
        browser, console_server, receiver, shots):
    tenant, destination, delivery = dead_lettered_delivery(console_server, receiver)
    receiver.status = 200  # the service is back
    context, page, csp = sign_in(browser, console_server, ADMIN_KEY)
    status = search_and_open(page, "Deliveries", "Destination id", destination, delivery,
                             f"/console/deliveries/{delivery}")
    assert status.inner_text() == "dead_lettered"
    assert "HTTP 503" in page.locator("[data-error]").inner_text()
    shots(page, "delivery-dead-lettered")
    page.evaluate("window.stillHere = true")
    page.get_by_role("button", name="Reprocess").click()
    playwright_api.expect(status).to_have_text("succeeded", timeout=30_000)  # no reload
    playwright_api.expect(page.locator("[data-message]")).to_have_text("Done: succeeded.")
    assert page.evaluate("window.stillHere") is True
    shots(page, "delivery-reprocessed")
    assert csp == [], csp
    context.close()


def test_pause_and_resume_a_destination_from_the_console(browser, console_server, receiver,
                                                         shots):
    tenant = new_tenant()
    destination = admin_api(console_server, "POST", f"/admin/tenants/{tenant}/destinations",
                            json={"url": f"{receiver.url}/held"})["id"]
    context, page, csp = sign_in(browser, console_server, ADMIN_KEY)
    page.goto(f"{console_server.url}/console/destinations?tenant_id={tenant}")
    page.get_by_role("button", name="Pause").click()
    page.wait_for_selector("text=paused")
    path = f"/admin/tenants/{tenant}/destinations/{destination}"
    assert admin_api(console_server, "GET", path)["paused"] is True
    before = receiver.received
    send(console_server, {"event": "order.paid", "data": {"n": 2}}, tenant,
         f"evt-{uuid.uuid4().hex}")
    time.sleep(1.0)
    assert receiver.received == before  # held while paused
    shots(page, "destinations-paused")
    page.get_by_role("button", name="Resume").click()
    page.get_by_role("button", name="Pause").wait_for()
    assert admin_api(console_server, "GET", path)["paused"] is False
    deadline = time.monotonic() + 30
    while receiver.received == before:  # and sent on resume
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert csp == [], csp
    context.close()


def test_a_viewer_sees_deliveries_but_no_control_and_forged_posts_are_refused(
        browser, console_server, receiver):
    tenant, destination, delivery = dead_lettered_delivery(console_server, receiver)
    context, page, _ = sign_in(browser, console_server, VIEWER_KEY)
    page.goto(f"{console_server.url}/console/deliveries/{delivery}")
    assert page.locator("[data-status]").inner_text() == "dead_lettered"
    assert page.get_by_role("button", name="Reprocess").count() == 0
    page.goto(f"{console_server.url}/console/destinations?tenant_id={tenant}")
    assert page.get_by_role("button", name="Pause").count() == 0
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    for url in (f"/console/deliveries/{delivery}/reprocess",
                f"/console/destinations/{destination}/pause"):
        forged = page.evaluate("""async ([url, token, tenant]) => {
            const r = await fetch(url, {method: "POST", headers: {"X-CSRF-Token": token,
                "Accept": "application/json"}, body: new URLSearchParams({tenant_id: tenant})});
            return r.status; }""", [url, token, tenant])
        assert forged == 403, url
    context.close()


def test_create_a_destination_with_a_filter_from_the_console_and_see_it_delivered(
        browser, console_server, receiver, shots):
    tenant = new_tenant()
    send(console_server, {"event": "warm.up", "data": {}}, tenant, f"evt-{uuid.uuid4().hex}")
    context, page, csp = sign_in(browser, console_server, ADMIN_KEY)
    page.goto(f"{console_server.url}/console/destinations")
    # the tenant picker offers the tenants the deployment knows (one sent a webhook today)
    assert page.locator(f'datalist#tenants option[value="{tenant}"]').count() == 1
    page.get_by_label("Tenant id").fill(tenant)
    page.get_by_role("button", name="Show").click()
    page.get_by_label("URL").fill(f"{receiver.url}/orders")
    page.get_by_label("Filter (JSON: sources, event_types, data)").fill("not json")
    page.get_by_role("button", name="Create destination").click()
    assert "filter: not JSON" in page.locator("main").inner_text()  # checked, as the API does
    page.go_back()
    page.get_by_label("URL").fill(f"{receiver.url}/orders")
    page.get_by_label("Filter (JSON: sources, event_types, data)").fill(
        '{"event_types": ["order.*"]}')
    page.get_by_label("Max concurrency").fill("2")
    page.get_by_role("button", name="Create destination").click()
    assert "whsec_" in page.locator(".secret").inner_text()  # its signing secret, once
    shots(page, "destination-created")
    destinations = admin_api(console_server, "GET",
                             f"/admin/tenants/{tenant}/destinations")["items"]
    assert [(d["url"], d["filter"], d["max_concurrency"]) for d in destinations] == [
        (f"{receiver.url}/orders", {"event_types": ["order.*"]}, 2)]
    before = receiver.received
    send(console_server, {"event": "user.created", "data": {}}, tenant, f"evt-{uuid.uuid4().hex}")
    send(console_server, {"event": "order.paid", "data": {}}, tenant, f"evt-{uuid.uuid4().hex}")
    deadline = time.monotonic() + 30
    while receiver.received < before + 1:  # the order event, delivered
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.0)
    assert receiver.received == before + 1  # and not the other
    page.get_by_role("button", name="Send a test event").click()
    assert "delivered (HTTP 200" in page.locator(".notice").inner_text()
    page.get_by_role("link", name="Edit").click()  # and change it, checked the same way
    page.get_by_label("Max concurrency").fill("3")
    page.get_by_label("Filter (JSON: sources, event_types, data)").fill(
        '{"event_types": ["order.paid"]}')
    page.get_by_label("Name").fill("orders")
    page.get_by_role("button", name="Save").click()
    assert "changed" in page.locator(".notice").inner_text()
    [changed] = admin_api(console_server, "GET", f"/admin/tenants/{tenant}/destinations")["items"]
    assert (changed["name"], changed["filter"], changed["max_concurrency"]) == (
        "orders", {"event_types": ["order.paid"]}, 3)
    assert csp == [], csp
    context.close()


def test_reprocess_all_dead_lettered_deliveries_that_match_after_a_count(
        browser, console_server, receiver):
    tenant, destination, _ = dead_lettered_delivery(console_server, receiver)
    send(console_server, {"event": "order.paid", "data": {"n": 2}}, tenant,
         f"evt-{uuid.uuid4().hex}")
    deadline = time.monotonic() + 30
    while [d["status"] for d in admin_api(console_server, "GET", "/admin/deliveries", params={
            "destination_id": destination})["items"]] != ["dead_lettered"] * 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    receiver.status = 200
    context, page, csp = sign_in(browser, console_server, ADMIN_KEY)
    page.goto(f"{console_server.url}/console/deliveries?destination_id={destination}")
    page.get_by_role("button", name="Reprocess all dead-lettered that match…").click()
    assert "2 dead-lettered deliveries match" in page.locator(".notice").inner_text()
    page.get_by_role("button", name="Reprocess 2").click()
    assert "2 delivery(ies) are being reprocessed" in page.locator("[role=status]").inner_text()
    deadline = time.monotonic() + 30
    while [d["status"] for d in admin_api(console_server, "GET", "/admin/deliveries", params={
            "destination_id": destination})["items"]] != ["succeeded"] * 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert csp == [], csp
    context.close()


def test_recover_a_destination_since_a_time_from_the_console(browser, console_server, receiver):
    tenant, destination, delivery = dead_lettered_delivery(console_server, receiver)
    receiver.status = 200
    context, page, csp = sign_in(browser, console_server, ADMIN_KEY)
    page.goto(f"{console_server.url}/console/destinations?tenant_id={tenant}")
    since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3600))
    page.get_by_label("Failed since (UTC)").fill(since)
    page.get_by_role("button", name="Recover").click()
    assert "1 delivery(ies) that failed since" in page.locator(".notice").inner_text()
    deadline = time.monotonic() + 30
    while admin_api(console_server, "GET", f"/admin/deliveries/{delivery}")["status"] != \
            "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert csp == [], csp
    context.close()
