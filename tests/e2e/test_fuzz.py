"""Random bytes and headers at every connector, and schemathesis over /openapi.json: the server
answers everything with a documented status, never a 5xx."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ADMIN_KEY, new_tenant, sign_generic, sign_github, sign_stripe

UNLIMITED = {
    "HARDENING__INGRESS_RATE_LIMIT_PER_SECOND": "1000000", "HARDENING__INGRESS_BURST": "1000000",
    "HARDENING__TENANT_RATE_LIMIT_PER_SECOND": "1000000",
    "HARDENING__TENANT_RATE_LIMIT_BURST": "1000000", "HARDENING__MAX_BODY_BYTES": "20000",
    "WEBHOOKS__STANDARD_SECRET": "whsec_" + base64.b64encode(b"fuzz-standard-key").decode(),
    "WEBHOOKS__SHOPIFY_SECRET": "fuzz-shopify", "WEBHOOKS__SLACK_SECRET": "fuzz-slack",
    "WEBHOOKS__GITLAB_SECRET": "fuzz-gitlab", "WEBHOOKS__PADDLE_SECRET": "fuzz-paddle",
    "WEBHOOKS__LINEAR_SECRET": "fuzz-linear",
}
DOCUMENTED = {200, 202, 400, 401, 404, 409, 413, 429}  # 200: Slack's url_verification


@pytest.fixture(scope="module")
def fuzz_server(module_servers):
    return module_servers("ingest", **UNLIMITED)


def dumps(value: object) -> bytes:
    # stdlib json: big integers and lone-surrogate escapes reach the server as real JSON text
    return json.dumps(value).encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                      max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=600),
    json_values.map(dumps),
    st.fixed_dictionaries({"event": st.text(max_size=20)}, optional={
        "data": json_values, "fail_until_attempt": st.integers(-5, 20000),
        "force_permanent_fail": json_values, "extra": json_values}).map(dumps),
    st.fixed_dictionaries({"id": st.text(max_size=300), "type": st.text(max_size=20)}, optional={
        "created": json_values, "data": json_values}).map(dumps),
)
header_text = st.text(alphabet=string.printable.replace("\n", "").replace("\r", ""), max_size=80)


def _mac(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.sha256).digest()


def _standard(b: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    sig = base64.b64encode(_mac(b"fuzz-standard-key", b"fz-1." + ts.encode() + b"." + b))
    return {"webhook-id": "fz-1", "webhook-timestamp": ts,
            "webhook-signature": "v1," + sig.decode()}


SIGNERS = {
    "generic": lambda b: {"X-Signature": sign_generic(b)},
    "github": lambda b: {"X-Hub-Signature-256": sign_github(b)},
    "stripe": lambda b: {"Stripe-Signature": sign_stripe(b)},
    "standard": _standard,
    "shopify": lambda b: {"X-Shopify-Hmac-Sha256": base64.b64encode(
        _mac(b"fuzz-shopify", b)).decode(), "X-Shopify-Topic": "orders/create"},
    "slack": lambda b: (lambda ts: {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": "v0=" + _mac(b"fuzz-slack", f"v0:{ts}:".encode() + b).hex(),
    })(str(int(time.time()))),
    "gitlab": lambda b: {"X-Gitlab-Token": "fuzz-gitlab", "X-Gitlab-Event": "Push Hook"},
    "paddle": lambda b: (lambda ts: {"Paddle-Signature": f"ts={ts};h1=" + _mac(
        b"fuzz-paddle", f"{ts}:".encode() + b).hex()})(str(int(time.time()))),
    "linear": lambda b: {"Linear-Signature": _mac(b"fuzz-linear", b).hex()},
}


@pytest.mark.parametrize("source", ["generic", "github", "stripe", "standard", "shopify",
                                    "slack", "gitlab", "paddle", "linear"])
def test_random_requests_never_get_a_5xx(fuzz_server, source):
    client = httpx.Client(timeout=30)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, signed=st.booleans(), tenant_in_path=st.booleans(),
           extra=st.dictionaries(st.sampled_from([
               "X-Signature", "X-Hub-Signature-256", "Stripe-Signature", "X-Tenant-Id",
               "X-GitHub-Event", "X-GitHub-Delivery", "X-Event-Id", "Content-Type",
               "X-Request-Id", "traceparent"]), header_text, max_size=4),
           content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded",
                                         "text/plain", "application/octet-stream"]))
    def check(body, signed, tenant_in_path, extra, content_type):
        headers = {"Content-Type": content_type, **extra}
        if signed:
            headers.update(SIGNERS[source](body))
            headers.pop("X-Tenant-Id", None)
        if tenant_in_path:
            url = f"{fuzz_server.url}/tenants/{new_tenant()}/webhooks/{source}"
        else:
            url = f"{fuzz_server.url}/webhooks/{source}"
        try:
            r = client.post(url, content=body, headers=headers)
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            return  # the client refused to send it: not a request the server saw
        assert r.status_code in DOCUMENTED, (r.status_code, r.text, headers, body[:200])
        assert r.headers["content-type"] == "application/json"
        doc = r.json()
        if r.status_code != 202:
            assert set(doc) >= {"error", "code"}

    check()
    client.close()


def test_schemathesis_finds_no_5xx_and_no_schema_violation(fuzz_server, tmp_path):
    out = subprocess.run([
        sys.executable, "-m", "schemathesis.cli",
        "--config-file", str(Path(__file__).with_name("schemathesis.toml")),
        "run", f"{fuzz_server.url}/openapi.json",
        "--checks", "all", "-H", f"Authorization: Bearer {ADMIN_KEY}", "--max-examples", "40",
        "--seed", "20261128", "--no-color",
    ], capture_output=True, text=True, cwd=tmp_path, timeout=600)  # its cache stays out of the repo
    assert out.returncode == 0, out.stdout[-6000:]
    assert "passed" in out.stdout
