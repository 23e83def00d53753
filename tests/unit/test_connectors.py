"""Connectors as pure functions: verify → normalize, one provider per module."""

from __future__ import annotations

import time

import orjson
import pytest

from relayforge.connectors import CONNECTORS
from relayforge.connectors.base import Signed
from relayforge.errors import InvalidPayload, InvalidSignature, MissingSignature, StaleTimestamp
from relayforge.events import DomainEvent
from relayforge.kernels import HmacSha256
from relayforge.settings import load_settings
from tests.support import sign_generic, sign_github, sign_stripe

KEYS = {"generic": [HmacSha256(b"g")], "github": [HmacSha256(b"h")], "stripe": [HmacSha256(b"s")]}


def test_every_connector_is_registered_by_its_name():
    assert set(CONNECTORS) == {"generic", "github", "stripe", "standard", "shopify", "slack",
                               "gitlab", "paddle", "linear"}
    assert all(c.name == name for name, c in CONNECTORS.items())
    assert [n for n, c in CONNECTORS.items() if c.replay_protected] == ["stripe"]


def test_generic_verify_and_normalize():
    body = b'{"event": "a.b", "data": [1], "fail_until_attempt": 2}'
    c = CONNECTORS["generic"]
    c.verify({b"x-signature": sign_generic(body, "g").encode()}, body, KEYS["generic"])
    event = c.normalize({b"x-event-id": b"e-1"}, body)
    assert event == DomainEvent("generic", "a.b", "e-1", None, [1], {"fail_until_attempt": 2})
    assert DomainEvent.from_json(event.to_json()) == event


def test_any_active_key_verifies():
    body = b"{}"
    keys = [HmacSha256(b"old"), HmacSha256(b"new")]
    for secret in ("old", "new"):
        signed = {b"x-signature": sign_generic(body, secret).encode()}
        CONNECTORS["generic"].verify(signed, body, keys)
    with pytest.raises(InvalidSignature):
        CONNECTORS["generic"].verify({b"x-signature": sign_generic(body, "x").encode()}, body, keys)


@pytest.mark.parametrize("source", ["generic", "github", "stripe"])
def test_missing_signature(source):
    with pytest.raises(MissingSignature):
        CONNECTORS[source].verify({}, b"{}", KEYS[source])


def test_github_event_type_falls_back_to_action():
    c = CONNECTORS["github"]
    body = b'{"action": "closed"}'
    c.verify({b"x-hub-signature-256": sign_github(body, "h").encode()}, body, KEYS["github"])
    assert c.normalize({}, body).event_type == "github.closed"
    assert c.normalize({b"x-github-event": b"issues"}, body).event_type == "issues"


def test_stripe_freshness_window():
    settings = load_settings({})
    c = CONNECTORS["stripe"]
    body = b'{"id": "evt_1", "type": "x"}'
    now = int(time.time())
    signed = c.verify({b"stripe-signature": sign_stripe(body, "s", now - 10).encode()}, body,
                      KEYS["stripe"])
    c.check_freshness(signed, now, settings)
    for skew in (301, -301):
        with pytest.raises(StaleTimestamp):
            c.check_freshness(Signed(timestamp=now + skew), now, settings)


def test_stripe_normalizes_data_object():
    event = CONNECTORS["stripe"].normalize({}, orjson.dumps(
        {"id": "evt_9", "type": "charge.succeeded", "created": 5, "data": {"object": {"a": 1}}}))
    assert (event.provider_event_id, event.occurred_at_unix, event.data) == ("evt_9", 5, {"a": 1})


@pytest.mark.parametrize("body", [b'{"id": "e", "type": "t", "created": true}',
                                  b'{"id": "e", "type": "t", "created": -1}',
                                  b'{"id": "' + b"e" * 256 + b'", "type": "t"}'])
def test_stripe_rejects(body):
    with pytest.raises(InvalidPayload):
        CONNECTORS["stripe"].normalize({}, body)
