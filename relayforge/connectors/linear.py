"""Linear: `Linear-Signature`, the hex HMAC-SHA256 of the body. Freshness comes from the signed
body's `webhookTimestamp` (milliseconds). Dedup key `Linear-Delivery`; event type
`<type>.<action>` from the body (`Issue.create`); data the body's `data`."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from relayforge.connectors.base import (
    Connector,
    HeaderDoc,
    Headers,
    Signed,
    check_tolerance,
    header_identifier,
    identifier,
    parse_json_object,
    require_header,
    verify_hex,
)
from relayforge.events import DomainEvent
from relayforge.kernels import HmacSha256
from relayforge.settings import Settings

MAX_UNIX_MS = 2**53


class LinearConnector(Connector):
    name = "linear"
    summary = "Linear: Linear-Signature over the body; freshness from webhookTimestamp"
    header_docs = (
        HeaderDoc("Linear-Signature", "hex HMAC-SHA256 of the raw body", required=True),
        HeaderDoc("Linear-Delivery", "the delivery id (dedup key)"),
    )
    body_schema = {"type": "object", "required": ["type", "action", "webhookTimestamp"],
                   "properties": {"type": {"type": "string"}, "action": {"type": "string"},
                                  "webhookTimestamp": {"type": "integer"}, "data": {}}}
    evidence_headers = (b"content-type", b"user-agent", b"linear-delivery", b"linear-event")

    def env_secret(self, settings: Settings) -> str:
        return settings.webhooks.linear_secret

    def verify(self, headers: Headers, body: bytes, keys: Sequence[HmacSha256]) -> Signed:
        verify_hex(keys, body, (require_header(headers, b"linear-signature").strip().lower(),))
        return Signed(timestamp=_webhook_timestamp(body))

    def normalize(self, headers: Headers, body: bytes) -> DomainEvent:
        doc = parse_json_object(body, "linear")
        kind = identifier(doc.get("type"), "type", required=True)
        action = identifier(doc.get("action"), "action", required=True)
        return DomainEvent.from_part(
            doc, ("data",),
            source=self.name,
            event_type=f"{kind}.{action}",
            provider_event_id=header_identifier(headers, b"linear-delivery"),
            occurred_at_unix=None,
        )

    def check_freshness(self, signed: Signed, now: int, settings: Settings) -> None:
        check_tolerance(signed, now, settings.webhooks.signature_tolerance_seconds,
                        "webhookTimestamp")


def _webhook_timestamp(body: bytes) -> int | None:
    """Seconds from the signed body's webhookTimestamp (ms); None when absent or unreadable
    (then the request is stale: Linear always sends it)."""
    try:
        value = orjson.loads(body).get("webhookTimestamp")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_UNIX_MS:
        return None
    return value // 1000
