"""Any HMAC signer: `X-Signature: <hex>` over the raw body, optional `X-Event-Id`."""

from __future__ import annotations

from collections.abc import Sequence

from relayforge.connectors.base import (
    Connector,
    DomainEvent,
    Headers,
    Signed,
    header_identifier,
    identifier,
    parse_json_object,
    require_header,
    verify_hex,
)
from relayforge.errors import InvalidPayload
from relayforge.kernels import HmacSha256
from relayforge.settings import Settings

ALLOWED_KEYS = frozenset({"event", "data", "fail_until_attempt", "force_permanent_fail"})
MAX_FAIL_UNTIL = 10000


class GenericConnector(Connector):
    name = "generic"
    evidence_headers = (b"content-type", b"user-agent", b"x-event-id")

    def env_secret(self, settings: Settings) -> str:
        return settings.webhooks.generic_hmac_secret

    def verify(self, headers: Headers, body: bytes, keys: Sequence[HmacSha256]) -> Signed:
        verify_hex(keys, body, (require_header(headers, b"x-signature"),))
        return Signed()

    def normalize(self, headers: Headers, body: bytes) -> DomainEvent:
        doc = parse_json_object(body, "generic")
        unknown = sorted(set(doc) - ALLOWED_KEYS)
        if unknown:
            raise InvalidPayload(f"unknown field {unknown[0]!r}", signature_valid=True)
        event_type = identifier(doc.get("event"), "event", required=True)
        faults: dict[str, object] = {}
        if "fail_until_attempt" in doc:
            n = doc["fail_until_attempt"]
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_FAIL_UNTIL:
                raise InvalidPayload(
                    f"fail_until_attempt must be an integer 0..{MAX_FAIL_UNTIL}", signature_valid=True
                )
            faults["fail_until_attempt"] = n
        if "force_permanent_fail" in doc:
            if not isinstance(doc["force_permanent_fail"], bool):
                raise InvalidPayload("force_permanent_fail must be a boolean", signature_valid=True)
            faults["force_permanent_fail"] = doc["force_permanent_fail"]
        return DomainEvent(
            source=self.name,
            event_type=event_type or "",
            provider_event_id=header_identifier(headers, b"x-event-id"),
            occurred_at_unix=None,
            data=doc.get("data"),
            faults=faults,
        )
