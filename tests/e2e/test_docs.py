"""/openapi.json is a valid document of every served route; /docs/ renders offline in a real
headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from openapi_spec_validator import validate

from relayforge.connectors import SOURCES
from relayforge.http.admin import ROUTES

SERVED = {
    ("POST", "/webhooks/{source}"), ("POST", "/tenants/{tenant_id}/webhooks/{source}"),
    *(("POST", f"/webhooks/{s}") for s in SOURCES),
    *(("POST", f"/tenants/{{tenant_id}}/webhooks/{s}") for s in SOURCES),
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/openapi.json"),
    ("GET", "/docs"),
} | {(r.method, r.path) for r in ROUTES}


async def test_openapi_is_valid_and_documents_every_route(client, ingest_server):
    r = await client.get(f"{ingest_server.url}/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    spec = r.json()
    validate(spec)
    documented = {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
    assert documented == SERVED
    # each of the nine sources documents its own signature headers, from its connector
    for source, header in (("generic", "X-Signature"), ("github", "X-Hub-Signature-256"),
                           ("stripe", "Stripe-Signature"), ("standard", "webhook-signature"),
                           ("shopify", "X-Shopify-Hmac-Sha256"), ("slack", "X-Slack-Signature"),
                           ("gitlab", "X-Gitlab-Token"), ("paddle", "Paddle-Signature"),
                           ("linear", "Linear-Signature")):
        for path in (f"/webhooks/{source}", f"/tenants/{{tenant_id}}/webhooks/{source}"):
            webhook = spec["paths"][path]["post"]
            headers = {p["name"] for p in webhook["parameters"] if p["in"] == "header"}
            assert header in headers, (path, headers)
            assert set(webhook["responses"]) >= {"202", "400", "401", "404", "409", "413",
                                                 "429"}
    slack = spec["paths"]["/webhooks/slack"]["post"]["responses"]["200"]
    assert "challenge" in slack["content"]["application/json"]["schema"]["properties"]
    tenant_source = spec["paths"]["/webhooks/{source}"]["post"]
    assert "X-Tenant-Id" in {p["name"] for p in tenant_source["parameters"]}


async def test_docs_redirects_and_serves_bundled_assets(client, ingest_server):
    r = await client.get(f"{ingest_server.url}/docs")
    assert r.status_code == 308 and r.headers["location"] == "/docs/"
    page = await client.get(f"{ingest_server.url}/docs/")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert "http" not in page.text.split("<body>")[1].split("/openapi.json")[0]  # no CDN
    for asset, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css")):
        r = await client.get(f"{ingest_server.url}/docs/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"] and len(r.content) > 1000
    assert (await client.get(f"{ingest_server.url}/docs/../settings.py")).status_code == 404


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None and not os.environ.get("CI"),
                    reason="Debian's chromium is not installed (CI installs it)")
def test_swagger_ui_renders_offline_in_headless_chromium(ingest_server, tmp_path):
    browser = _chromium()
    assert browser, "CI must install Debian's chromium"
    out = subprocess.run([
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path}", "--virtual-time-budget=20000", "--dump-dom",
        f"{ingest_server.url}/docs/",
    ], capture_output=True, text=True, timeout=120)
    dom = out.stdout
    assert 'class="swagger-ui' in dom, out.stderr[-2000:]
    assert "/webhooks/{source}" in dom and "/admin/jobs" in dom
    assert "Relayforge" in dom
