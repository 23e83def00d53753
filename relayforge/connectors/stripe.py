"""Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]` over "<t>.<body>", one t only,
freshness window, and per-tenant event idempotency (a replayed event id gets 409)."""

from __future__ import annotations

from collections.abc import Sequence

from relayforge.connectors.base import (
    Connector,
    HeaderDoc,
    Headers,
    Signed,
    identifier,
    parse_json_object,
    require_header,
    verify_hex,
)
from relayforge.errors import InvalidPayload, InvalidSignature, StaleTimestamp
from relayforge.events import DomainEvent
from relayforge.kernels import HmacSha256, parse_stripe_signature
from relayforge.settings import Settings

MAX_UNIX = 2**53


class StripeConnector(Connector):
    name = "stripe"
    summary = "Stripe: Stripe-Signature over '<t>.<body>'; an event id is accepted once"
    header_docs = (HeaderDoc("Stripe-Signature", "t=<unix>,v1=<hex>[,v1=...] over '<t>.<body>'",
                             required=True),)
    body_schema = {"type": "object", "required": ["id", "type"], "properties": {
        "id": {"type": "string", "minLength": 1}, "type": {"type": "string", "minLength": 1},
        "created": {"type": "integer"},
        "data": {"type": "object", "properties": {"object": {}}}}}
    replay_protected = True
    evidence_headers = (b"content-type", b"user-agent")

    def env_secret(self, settings: Settings) -> str:
        return settings.webhooks.stripe_endpoint_secret

    def verify(self, headers: Headers, body: bytes, keys: Sequence[HmacSha256]) -> Signed:
        try:
            timestamp, t_raw, signatures = parse_stripe_signature(
                require_header(headers, b"stripe-signature")
            )
        except ValueError as exc:
            raise InvalidSignature(f"malformed Stripe-Signature: {exc}",
                                   signature_valid=False) from None
        verify_hex(keys, body, signatures, prefix=t_raw + b".")
        return Signed(timestamp=timestamp)

    def normalize(self, headers: Headers, body: bytes) -> DomainEvent:
        doc = parse_json_object(body, "stripe")
        event_type = identifier(doc.get("type"), "type", required=True)
        event_id = identifier(doc.get("id"), "id", required=True)
        created = doc.get("created")
        if created is not None and (
            isinstance(created, bool) or not isinstance(created, int) or not 0 <= created < MAX_UNIX
        ):
            raise InvalidPayload("created must be a unix timestamp", signature_valid=True)
        data = doc.get("data")
        if data is not None and not isinstance(data, dict):
            raise InvalidPayload("data must be an object", signature_valid=True)
        return DomainEvent.from_part(
            doc, ("data", "object"),
            source=self.name,
            event_type=event_type or "",
            provider_event_id=event_id,
            occurred_at_unix=created,
        )

    def check_freshness(self, signed: Signed, now: int, settings: Settings) -> None:
        tolerance = settings.webhooks.stripe_signature_tolerance_seconds
        if signed.timestamp is None or abs(now - signed.timestamp) > tolerance:
            raise StaleTimestamp(
                f"Stripe-Signature timestamp is outside the {tolerance}s tolerance",
                signature_valid=True,
            )
