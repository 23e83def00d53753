"""Shopify: `X-Shopify-Hmac-Sha256`, the base64 HMAC-SHA256 of the body under the app's client
secret. Dedup key `X-Shopify-Webhook-Id` (else `X-Shopify-Event-Id`); event type
`X-Shopify-Topic` (`orders/create`); the data is the whole body. The scheme has no signed
timestamp, so no freshness window."""

from __future__ import annotations

from collections.abc import Sequence

from relayforge.connectors.base import (
    Connector,
    HeaderDoc,
    Headers,
    Signed,
    header_identifier,
    parse_json_object,
    require_header,
    verify_base64,
)
from relayforge.errors import InvalidPayload
from relayforge.events import DomainEvent
from relayforge.kernels import HmacSha256
from relayforge.settings import Settings


class ShopifyConnector(Connector):
    name = "shopify"
    summary = "Shopify: X-Shopify-Hmac-Sha256 (base64) over the body"
    header_docs = (
        HeaderDoc("X-Shopify-Hmac-Sha256", "base64 HMAC-SHA256 of the raw body", required=True),
        HeaderDoc("X-Shopify-Topic", "the event type (orders/create)", required=True),
        HeaderDoc("X-Shopify-Webhook-Id", "the delivery id (dedup key)"),
        HeaderDoc("X-Shopify-Event-Id", "the event id, without a webhook id"),
    )
    evidence_headers = (b"content-type", b"user-agent", b"x-shopify-topic",
                        b"x-shopify-shop-domain", b"x-shopify-webhook-id", b"x-shopify-event-id",
                        b"x-shopify-api-version", b"x-shopify-triggered-at")

    def env_secret(self, settings: Settings) -> str:
        return settings.webhooks.shopify_secret

    def verify(self, headers: Headers, body: bytes, keys: Sequence[HmacSha256]) -> Signed:
        verify_base64(keys, body, (require_header(headers, b"x-shopify-hmac-sha256").strip(),))
        return Signed()

    def normalize(self, headers: Headers, body: bytes) -> DomainEvent:
        doc = parse_json_object(body, "shopify")
        topic = header_identifier(headers, b"x-shopify-topic")
        if topic is None:
            raise InvalidPayload("X-Shopify-Topic header is required", signature_valid=True)
        event_id = header_identifier(headers, b"x-shopify-webhook-id") or header_identifier(
            headers, b"x-shopify-event-id")
        return DomainEvent.from_part(doc, (), source=self.name, event_type=topic,
                                     provider_event_id=event_id, occurred_at_unix=None)
