"""The connectors added for Standard Webhooks, Svix, Shopify, Slack, GitLab, Paddle and Linear,
as pure functions. Requests are signed by the providers' own libraries where one exists
(`standardwebhooks`, `svix`, `slack_sdk`, `paddle_billing`), else exactly as the provider's
documentation writes the computation; the connectors must agree with them on valid and
tampered input. Both kernel implementations run these (the suite runs twice)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import orjson
import pytest
import standardwebhooks
import svix.webhooks
from paddle_billing.Notifications.PaddleSignature import PaddleSignature
from slack_sdk.signature import SignatureVerifier

from relayforge.connectors import CONNECTORS
from relayforge.connectors.base import Signed
from relayforge.errors import InvalidPayload, InvalidSignature, MissingSignature, StaleTimestamp
from relayforge.kernels import HmacSha256
from relayforge.settings import load_settings

SETTINGS = load_settings({}, dotenv=False)
WHSEC = "whsec_" + base64.b64encode(b"standard-webhooks-test-key-32byt").decode()


def keys(source: str, *secrets: str) -> list[HmacSha256]:
    return [HmacSha256(CONNECTORS[source].signing_key(s)) for s in secrets]


def lower(headers: dict[str, str]) -> dict[bytes, bytes]:
    return {k.lower().encode(): v.encode() for k, v in headers.items()}


def tampered(body: bytes) -> bytes:
    return body[:-2] + b" }"


# ------------------------------------------------------------------- Standard Webhooks, Svix

def standard_headers(body: bytes, msg_id: str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
                     when: datetime | None = None, secret: str = WHSEC) -> dict[bytes, bytes]:
    when = when or datetime.now(tz=UTC)
    signature = standardwebhooks.Webhook(secret).sign(msg_id, when, body.decode())
    return lower({"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
                  "webhook-signature": signature})


def test_standard_webhooks_signed_by_the_official_library():
    body = b'{"type": "invoice.paid", "data": {"id": "inv_1", "amount": 5}}'
    headers = standard_headers(body)
    c = CONNECTORS["standard"]
    signed = c.verify(headers, body, keys("standard", WHSEC))
    c.check_freshness(signed, int(time.time()), SETTINGS)
    event = c.normalize(headers, body)
    assert (event.event_type, event.provider_event_id, event.data) == (
        "invoice.paid", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", {"id": "inv_1", "amount": 5})
    with pytest.raises(InvalidSignature):
        c.verify(headers, tampered(body), keys("standard", WHSEC))
    other = "whsec_" + base64.b64encode(b"another-key-another-key-another!").decode()
    with pytest.raises(InvalidSignature):
        c.verify(headers, body, keys("standard", other))
    # several signatures (a sender rotating): any one that verifies is enough
    headers[b"webhook-signature"] = b"v1,bm9wZQ== " + headers[b"webhook-signature"]
    c.verify(headers, body, keys("standard", WHSEC))


def test_standard_webhooks_freshness_and_missing_headers():
    body = b'{"type": "a", "data": {}}'
    old = datetime.fromtimestamp(time.time() - 3600, tz=UTC)
    headers = standard_headers(body, when=old)
    c = CONNECTORS["standard"]
    signed = c.verify(headers, body, keys("standard", WHSEC))  # valid, but an hour old
    with pytest.raises(StaleTimestamp):
        c.check_freshness(signed, int(time.time()), SETTINGS)
    for name in (b"webhook-id", b"webhook-timestamp", b"webhook-signature"):
        partial = {k: v for k, v in standard_headers(body).items() if k != name}
        with pytest.raises((MissingSignature, InvalidSignature)):
            c.verify(partial, body, keys("standard", WHSEC))


def test_svix_headers_signed_by_svix():
    body = b'{"type": "user.created", "data": {"id": "u_1"}}'
    when = datetime.now(tz=UTC)
    signature = svix.webhooks.Webhook(WHSEC).sign("msg_svix_1", when, body.decode())
    headers = lower({"svix-id": "msg_svix_1", "svix-timestamp": str(int(when.timestamp())),
                     "svix-signature": signature})
    c = CONNECTORS["standard"]
    c.verify(headers, body, keys("standard", WHSEC))
    assert c.normalize(headers, body).provider_event_id == "msg_svix_1"
    with pytest.raises(InvalidSignature):
        c.verify(headers, tampered(body), keys("standard", WHSEC))


# ------------------------------------------------------------------------------- Shopify

def shopify_signature(secret: str, body: bytes) -> str:
    """As Shopify's documentation computes it: base64(HMAC-SHA256(client secret, raw body))."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_shopify():
    body = b'{"id": 820982911946154508, "email": "jon@example.com"}'
    headers = lower({"X-Shopify-Hmac-Sha256": shopify_signature("shpss_secret", body),
                     "X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": "b54557e4"})
    c = CONNECTORS["shopify"]
    c.verify(headers, body, keys("shopify", "shpss_secret"))
    event = c.normalize(headers, body)
    assert (event.event_type, event.provider_event_id) == ("orders/create", "b54557e4")
    assert event.data == orjson.loads(body)
    with pytest.raises(InvalidSignature):
        c.verify(headers, tampered(body), keys("shopify", "shpss_secret"))
    with pytest.raises(InvalidSignature):
        c.verify(headers, body, keys("shopify", "other"))
    with pytest.raises(InvalidPayload):  # the topic is the event type: required
        c.normalize({k: v for k, v in headers.items() if k != b"x-shopify-topic"}, body)


# --------------------------------------------------------------------------------- Slack

def slack_headers(body: bytes, secret: str = "8f742231b10e8888abcd99yyyzzz85a5",
                  timestamp: int | None = None, **extra: str) -> dict[bytes, bytes]:
    timestamp = timestamp or int(time.time())
    signature = SignatureVerifier(secret).generate_signature(timestamp=str(timestamp), body=body)
    return lower({"X-Slack-Signature": signature, "X-Slack-Request-Timestamp": str(timestamp),
                  **extra})


def test_slack_matches_slack_sdk_and_its_documented_example():
    secret = "8f742231b10e8888abcd99yyyzzz85a5"  # Slack's own documentation example
    body = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
            b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
            b"command=%2Fwebhook-collect&text=&"
            b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F"
            b"96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447"
            b"fce8b6703c")
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert SignatureVerifier(secret).generate_signature(
        timestamp="1531420618", body=body) == expected
    headers = lower({"X-Slack-Signature": expected, "X-Slack-Request-Timestamp": "1531420618",
                     "Content-Type": "application/x-www-form-urlencoded"})
    c = CONNECTORS["slack"]
    signed = c.verify(headers, body, keys("slack", secret))
    assert signed == Signed(timestamp=1531420618)
    with pytest.raises(StaleTimestamp):  # 2018 is long past
        c.check_freshness(signed, int(time.time()), SETTINGS)
    event = c.normalize(headers, body)
    assert event.event_type == "slash_command" and event.data["command"] == "/webhook-collect"
    with pytest.raises(InvalidSignature):
        c.verify(headers, body + b"x", keys("slack", secret))


def test_slack_events_api_and_the_url_verification_handshake():
    c = CONNECTORS["slack"]
    callback = orjson.dumps({"type": "event_callback", "event_id": "Ev0PV52K21",
                             "event_time": 1355517523, "team_id": "T1",
                             "event": {"type": "app_mention", "text": "hi", "user": "U1"}})
    headers = slack_headers(callback, **{"Content-Type": "application/json"})
    c.verify(headers, callback, keys("slack", "8f742231b10e8888abcd99yyyzzz85a5"))
    assert c.direct_answer(headers, callback) is None
    event = c.normalize(headers, callback)
    assert (event.event_type, event.provider_event_id) == ("app_mention", "Ev0PV52K21")
    challenge = (b'{"token": "t", "challenge": '
                 b'"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", '
                 b'"type": "url_verification"}')
    assert c.direct_answer(slack_headers(challenge), challenge) == {
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    interactive = b"payload=" + orjson.dumps({"type": "block_actions", "actions": []}).replace(
        b"{", b"%7B").replace(b"}", b"%7D").replace(b'"', b"%22").replace(b":", b"%3A").replace(
        b",", b"%2C").replace(b"[", b"%5B").replace(b"]", b"%5D").replace(b" ", b"+")
    form = slack_headers(interactive, **{"Content-Type": "application/x-www-form-urlencoded"})
    c.verify(form, interactive, keys("slack", "8f742231b10e8888abcd99yyyzzz85a5"))
    assert c.normalize(form, interactive).event_type == "block_actions"


# -------------------------------------------------------------------------------- GitLab

def test_gitlab_secret_token_in_constant_time():
    body = b'{"object_kind": "push", "ref": "refs/heads/main"}'
    c = CONNECTORS["gitlab"]
    headers = lower({"X-Gitlab-Token": "glsecret-123", "X-Gitlab-Event": "Push Hook",
                     "X-Gitlab-Event-UUID": "b54557e4-1cf0-4d7e-a5f6-a1dc3bd2e5d4",
                     "Idempotency-Key": "f3d4e2c1-idem"})
    c.verify(headers, body, keys("gitlab", "glsecret-123"))
    event = c.normalize(headers, body)
    assert (event.event_type, event.provider_event_id) == ("Push Hook", "f3d4e2c1-idem")
    for wrong in ("glsecret-12", "glsecret-1234", "GLSECRET-123", ""):
        with pytest.raises((InvalidSignature, MissingSignature)):
            c.verify({**headers, b"x-gitlab-token": wrong.encode()}, body,
                     keys("gitlab", "glsecret-123"))
    bare = {b"x-gitlab-token": b"glsecret-123"}
    event = c.normalize(bare, body)  # no headers: object_kind, and no id
    assert (event.event_type, event.provider_event_id) == ("push", None)


def test_gitlab_signing_token_is_standard_webhooks():
    body = b'{"object_kind": "merge_request"}'
    headers = standard_headers(body, msg_id="gitlab-msg-1")
    c = CONNECTORS["gitlab"]
    c.verify(headers, body, keys("gitlab", WHSEC))
    with pytest.raises(InvalidSignature):
        c.verify(headers, tampered(body), keys("gitlab", WHSEC))


# -------------------------------------------------------------------------------- Paddle

def paddle_header(secret: str, body: bytes, ts: int | None = None, extra_h1: str = "") -> str:
    ts = ts or int(time.time())
    digest = PaddleSignature.calculate_hmac(secret, f"{ts}:".encode() + body).hexdigest()
    return f"ts={ts};h1={digest}" + (f";h1={extra_h1}" if extra_h1 else "")


def test_paddle_signed_and_checked_by_paddles_sdk():
    from paddle_billing.Notifications import Secret
    from paddle_billing.Notifications.Verifier import Verifier

    secret = "pdl_ntfset_01gkpjp8bkm3tm53kdgkx6sms7_6h3qd3uFSi9YCD3OLYAShQI90XTI5vEI"
    body = orjson.dumps({"event_id": "evt_01h8bzakzx3hm2fmen703n5q45",
                         "event_type": "transaction.completed",
                         "data": {"id": "txn_01h8bx69629a16wwm9z8rjmak3"}})
    header = paddle_header(secret, body, extra_h1="0" * 64)

    class Request:  # the shape Paddle's Verifier reads
        headers = {"Paddle-Signature": header}
        content = body

    assert Verifier().verify(Request(), Secret(secret))  # Paddle's SDK agrees it is valid
    c = CONNECTORS["paddle"]
    signed = c.verify(lower({"Paddle-Signature": header}), body, keys("paddle", secret))
    c.check_freshness(signed, int(time.time()), SETTINGS)
    event = c.normalize({}, body)
    assert (event.event_type, event.provider_event_id, event.data) == (
        "transaction.completed", "evt_01h8bzakzx3hm2fmen703n5q45",
        {"id": "txn_01h8bx69629a16wwm9z8rjmak3"})
    with pytest.raises(InvalidSignature):
        c.verify(lower({"Paddle-Signature": header}), tampered(body), keys("paddle", secret))
    for bad in ("ts=abc;h1=00", "h1=" + "0" * 64, f"ts={int(time.time())}", "ts=1;ts=2;h1=00"):
        with pytest.raises(InvalidSignature):
            c.verify(lower({"Paddle-Signature": bad}), body, keys("paddle", secret))


# -------------------------------------------------------------------------------- Linear

def test_linear():
    secret = "lin_wh_test_secret"
    body = orjson.dumps({"action": "create", "type": "Issue", "data": {"id": "iss_1"},
                         "webhookTimestamp": int(time.time() * 1000)})
    # Linear's documentation: hex HMAC-SHA256 of the raw body under the webhook's secret
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = lower({"Linear-Signature": signature, "Linear-Delivery": "234d1a4e-b617-4388",
                     "Linear-Event": "Issue"})
    c = CONNECTORS["linear"]
    signed = c.verify(headers, body, keys("linear", secret))
    c.check_freshness(signed, int(time.time()), SETTINGS)
    event = c.normalize(headers, body)
    assert (event.event_type, event.provider_event_id, event.data) == (
        "Issue.create", "234d1a4e-b617-4388", {"id": "iss_1"})
    with pytest.raises(InvalidSignature):
        c.verify(headers, tampered(body), keys("linear", secret))
    stale = orjson.dumps({"action": "create", "type": "Issue", "data": {},
                          "webhookTimestamp": int((time.time() - 3600) * 1000)})
    headers[b"linear-signature"] = hmac.new(secret.encode(), stale, hashlib.sha256
                                            ).hexdigest().encode()
    with pytest.raises(StaleTimestamp):
        c.check_freshness(c.verify(headers, stale, keys("linear", secret)), int(time.time()),
                          SETTINGS)


@pytest.mark.parametrize("source", ["standard", "shopify", "slack", "gitlab", "paddle", "linear"])
def test_no_header_is_a_missing_signature(source):
    with pytest.raises(MissingSignature):
        CONNECTORS[source].verify({}, b"{}", keys(source, "s"))
