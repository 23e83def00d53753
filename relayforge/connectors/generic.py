"""Any HMAC signer: `X-Signature: <hex>` over the raw body, optional `X-Event-Id`.

`X-Event-Id` is outside the signature, so whoever holds a captured request can send it again
under another id, and it is a new event. A sender that can sign its id sends
`X-Signed-Event-Id` instead, and signs `<id>.<body>`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from relayforge.connectors.base import (
    MAX_IDENTIFIER,
    Connector,
    HeaderDoc,
    Headers,
    Signed,
    header_identifier,
    parse_json_object,
    require_header,
    verify_hex,
)
from relayforge.errors import InvalidPayload
from relayforge.events import CONTROL, DomainEvent
from relayforge.kernels import HmacSha256
from relayforge.settings import Settings

MAX_FAIL_UNTIL = 10000
# A name or id a provider supplies: not blank, no control characters (NUL included: PostgreSQL
# text can't hold it).
Identifier = Annotated[str, msgspec.Meta(
    min_length=1, max_length=MAX_IDENTIFIER,
    pattern=f"^[^{CONTROL}]*[^{CONTROL}\\s][^{CONTROL}]*$")]


class GenericBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The generic body, strict: unknown keys are refused. The last two fields are test
    faults, honoured by the consumer only with WORKER__ENABLE_TEST_FAULTS=true."""

    event: Identifier
    data: Any = None
    fail_until_attempt: Annotated[int, msgspec.Meta(ge=0, le=MAX_FAIL_UNTIL)] | UnsetType = UNSET
    force_permanent_fail: bool | UnsetType = UNSET


class GenericConnector(Connector):
    name = "generic"
    summary = "Any HMAC signer: X-Signature over the body (or over '<id>.<body>')"
    header_docs = (
        HeaderDoc("X-Signature", "lowercase hex HMAC-SHA256 of the raw body, or of "
                  "'<X-Signed-Event-Id>.<body>' when that header is sent", required=True),
        HeaderDoc("X-Event-Id", "the provider's event id (dedup key); not covered by the "
                  "signature"),
        HeaderDoc("X-Signed-Event-Id", "the provider's event id, covered by the signature "
                  "(instead of X-Event-Id)"),
    )
    body_schema = {"$ref": "#/components/schemas/GenericBody"}
    max_body_bytes = None  # HARDENING__MAX_BODY_BYTES
    evidence_headers = (b"content-type", b"user-agent", b"x-event-id", b"x-signed-event-id")

    def env_secret(self, settings: Settings) -> str:
        return settings.webhooks.generic_hmac_secret

    def verify(self, headers: Headers, body: bytes, keys: Sequence[HmacSha256]) -> Signed:
        signed_id = headers.get(b"x-signed-event-id")
        verify_hex(keys, body, (require_header(headers, b"x-signature"),),
                   prefix=b"" if signed_id is None else signed_id + b".")
        return Signed()

    def normalize(self, headers: Headers, body: bytes) -> DomainEvent:
        # orjson parses (its limits hold for every connector); the model validates.
        doc = parse_json_object(body, "generic")
        try:
            parsed = msgspec.convert(doc, GenericBody)
        except msgspec.ValidationError as exc:
            message, _, path = str(exc).partition(" - at `$.")
            if "regex" in message:
                message = "must be a non-blank string without control characters"
            raise InvalidPayload(f"{path.rstrip('`') or 'body'}: {message}",
                                 signature_valid=True) from None
        faults: dict[str, Any] = {}
        if parsed.fail_until_attempt is not UNSET:
            faults["fail_until_attempt"] = parsed.fail_until_attempt
        if parsed.force_permanent_fail is not UNSET:
            faults["force_permanent_fail"] = parsed.force_permanent_fail
        return DomainEvent.from_part(
            doc, ("data",),
            source=self.name,
            event_type=parsed.event,
            provider_event_id=_event_id(headers),
            occurred_at_unix=None,
            faults=faults,
        )


def _event_id(headers: Headers) -> str | None:
    signed = header_identifier(headers, b"x-signed-event-id")
    unsigned = header_identifier(headers, b"x-event-id")
    if signed is not None and unsigned is not None:
        raise InvalidPayload("send one of X-Event-Id and X-Signed-Event-Id", signature_valid=True)
    return signed if signed is not None else unsigned
