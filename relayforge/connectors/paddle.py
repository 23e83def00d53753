"""Paddle Billing: `Paddle-Signature: ts=<unix>;h1=<hex>[;h1=<hex>…]`, HMAC-SHA256 of
"<ts>:<body>" under the notification destination's secret key. Dedup key: the body's
`event_id`; event type `event_type`; data the body's `data`."""

from __future__ import annotations

from collections.abc import Sequence

from relayforge.connectors.base import (
    Connector,
    HeaderDoc,
    Headers,
    Signed,
    check_tolerance,
    identifier,
    parse_json_object,
    parse_timestamp,
    require_header,
    verify_hex,
)
from relayforge.errors import InvalidSignature
from relayforge.events import DomainEvent
from relayforge.kernels import HmacSha256
from relayforge.settings import Settings

MAX_PARTS = 16


class PaddleConnector(Connector):
    name = "paddle"
    summary = "Paddle: Paddle-Signature over '<ts>:<body>'"
    header_docs = (HeaderDoc("Paddle-Signature", "ts=<unix>;h1=<hex>[;h1=...] over "
                             "'<ts>:<body>'", required=True),)
    body_schema = {"type": "object", "required": ["event_id", "event_type"], "properties": {
        "event_id": {"type": "string"}, "event_type": {"type": "string"}, "data": {}}}
    evidence_headers = (b"content-type", b"user-agent")

    def env_secret(self, settings: Settings) -> str:
        return settings.webhooks.paddle_secret

    def verify(self, headers: Headers, body: bytes, keys: Sequence[HmacSha256]) -> Signed:
        header = require_header(headers, b"paddle-signature")
        parts = header.split(b";")
        if len(parts) > MAX_PARTS:
            raise InvalidSignature("Paddle-Signature has too many parts", signature_valid=False)
        ts_raw: bytes | None = None
        h1: list[bytes] = []
        for part in parts:
            key, _, value = part.strip().partition(b"=")
            if key == b"ts":
                if ts_raw is not None:
                    raise InvalidSignature("Paddle-Signature has two ts", signature_valid=False)
                ts_raw = value
            elif key == b"h1":
                h1.append(value.lower())
        timestamp = parse_timestamp(ts_raw, "Paddle-Signature ts")
        if not h1:
            raise InvalidSignature("Paddle-Signature has no h1", signature_valid=False)
        verify_hex(keys, body, h1, prefix=str(timestamp).encode() + b":")
        return Signed(timestamp=timestamp)

    def normalize(self, headers: Headers, body: bytes) -> DomainEvent:
        doc = parse_json_object(body, "paddle")
        return DomainEvent.from_part(
            doc, ("data",),
            source=self.name,
            event_type=identifier(doc.get("event_type"), "event_type", required=True) or "",
            provider_event_id=identifier(doc.get("event_id"), "event_id", required=True),
            occurred_at_unix=None,
        )

    def check_freshness(self, signed: Signed, now: int, settings: Settings) -> None:
        check_tolerance(signed, now, settings.webhooks.signature_tolerance_seconds,
                        "Paddle-Signature ts")
