"""Standard Webhooks (https://www.standardwebhooks.com/), and Svix, which signs the same way
under `svix-*` header names:

    webhook-id, webhook-timestamp, webhook-signature: v1,<base64> [v1,<base64> …]

over "<id>.<timestamp>.<body>", keyed with the base64-decoded part of the `whsec_…` secret. The
id is the dedup key; the body's `type` is the event type and its `data` the data.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from relayforge.connectors.base import (
    Connector,
    HeaderDoc,
    Headers,
    Signed,
    check_tolerance,
    header_identifier,
    identifier,
    parse_json_object,
    parse_timestamp,
    require_header,
    verify_base64,
)
from relayforge.errors import InvalidSignature
from relayforge.events import DomainEvent
from relayforge.kernels import HmacSha256
from relayforge.settings import Settings

SECRET_PREFIX = "whsec_"
NAMES = ((b"webhook-id", b"webhook-timestamp", b"webhook-signature"),
         (b"svix-id", b"svix-timestamp", b"svix-signature"))


def whsec_key(secret: str) -> bytes:
    """The key of a `whsec_<base64>` secret; a secret not in that form is used as it is."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def header_names(headers: Headers) -> tuple[bytes, bytes, bytes]:
    """The Standard Webhooks names, or Svix's when only those are present."""
    return NAMES[1] if b"webhook-signature" not in headers and b"svix-signature" in headers \
        else NAMES[0]


def verify_standard(headers: Headers, body: bytes, keys: Sequence[HmacSha256]) -> Signed:
    id_name, ts_name, sig_name = header_names(headers)
    signatures = require_header(headers, sig_name)
    msg_id = require_header(headers, id_name)
    timestamp = parse_timestamp(require_header(headers, ts_name), ts_name.decode())
    v1 = [part[3:] for part in signatures.split() if part.startswith(b"v1,")]
    if not v1:
        raise InvalidSignature(f"{sig_name.decode()} has no v1 signature", signature_valid=False)
    verify_base64(keys, body, v1, prefix=msg_id + b"." + str(timestamp).encode() + b".")
    return Signed(timestamp=timestamp)


class StandardWebhooksConnector(Connector):
    name = "standard"
    summary = "Standard Webhooks (and Svix's svix-* names): webhook-signature over " \
              "'<id>.<timestamp>.<body>'"
    header_docs = (
        HeaderDoc("webhook-id", "the message id (dedup key); or svix-id", required=True),
        HeaderDoc("webhook-timestamp", "unix seconds, within the tolerance; or svix-timestamp",
                  required=True),
        HeaderDoc("webhook-signature", "v1,<base64> [v1,<base64> ...], keyed with the base64 "
                  "part of whsec_...; or svix-signature", required=True),
    )
    body_schema = {"type": "object", "required": ["type"], "properties": {
        "type": {"type": "string", "minLength": 1}, "data": {}}}
    evidence_headers = (b"content-type", b"user-agent", b"webhook-id", b"webhook-timestamp",
                        b"svix-id", b"svix-timestamp")

    def env_secret(self, settings: Settings) -> str:
        return settings.webhooks.standard_secret

    def signing_key(self, secret: str) -> bytes:
        return whsec_key(secret)

    def verify(self, headers: Headers, body: bytes, keys: Sequence[HmacSha256]) -> Signed:
        return verify_standard(headers, body, keys)

    def normalize(self, headers: Headers, body: bytes) -> DomainEvent:
        doc = parse_json_object(body, "standard webhooks")
        id_name = header_names(headers)[0]
        return DomainEvent.from_part(
            doc, ("data",),
            source=self.name,
            event_type=identifier(doc.get("type"), "type", required=True) or "",
            provider_event_id=header_identifier(headers, id_name),
            occurred_at_unix=None,
        )

    def check_freshness(self, signed: Signed, now: int, settings: Settings) -> None:
        check_tolerance(signed, now, settings.webhooks.signature_tolerance_seconds,
                        "webhook-timestamp")
