"""Sources a tenant defines without code (`PUT /admin/tenants/{tenant_id}/sources/{name}`):

    {"verification": {"type": "hmac", "header": "X-Sig", "algorithm": "sha256",
                      "encoding": "hex", "prefix": "sha256=",
                      "signed_content": "{timestamp}.{body}", "timestamp_header": "X-Ts",
                      "tolerance_seconds": 300}
                   | {"type": "token", "header": "X-Token"} | {"type": "basic_auth"},
     "event_type": {"header": "X-Event"} | {"body": "path.to.field"},
     "event_id": {"header": "X-Id"} | {"body": "path.to.field"},
     "max_body_bytes": 1048576}

The body must be JSON; its whole document is the event's data. Without `event_type` the event
type is the source's name; without `event_id` duplicates are found by the body's hash. The
secret comes from the tenant secrets API (provider = the source's name): an HMAC key, the token,
or `user:password` for basic auth.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from relayforge.connectors.base import (
    MIB,
    Connector,
    Headers,
    Signed,
    check_tolerance,
    header_identifier,
    identifier,
    parse_json_object,
    parse_timestamp,
    require_header,
    verify_token,
)
from relayforge.errors import InvalidPayload, InvalidSignature, MissingSignature
from relayforge.events import DomainEvent
from relayforge.kernels import TOKEN_ALGORITHM, Hmac, HmacSha256
from relayforge.settings import Settings

NAME_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_BODY_LIMIT = 25 * MIB
HeaderName = Annotated[str, Meta(min_length=1, max_length=128,
                                 pattern="^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]
BodyPath = Annotated[str, Meta(min_length=1, max_length=255,
                               pattern="^[^.\\x00]+(\\.[^.\\x00]+){0,15}$",
                               description="dot-separated keys into the JSON body")]


class Definition(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of the definition's parts: unknown fields are refused."""


class HmacVerification(Definition, tag="hmac", tag_field="type"):
    header: HeaderName
    algorithm: Literal["sha256", "sha1", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: Annotated[str, Meta(max_length=32, pattern="^[\\x21-\\x7e]*$")] = ""
    signed_content: Literal["{body}", "{timestamp}.{body}", "{timestamp}:{body}"] = "{body}"
    timestamp_header: HeaderName | UnsetType = UNSET
    tolerance_seconds: Annotated[int, Meta(ge=1, le=86_400)] = 300


class TokenVerification(Definition, tag="token", tag_field="type"):
    header: HeaderName


class BasicAuthVerification(Definition, tag="basic_auth", tag_field="type"):
    pass


class Field(Definition):
    """Where a value is: a request header, or a path into the JSON body (exactly one)."""

    header: HeaderName | UnsetType = UNSET
    body: BodyPath | UnsetType = UNSET


class SourceDefinition(Definition):
    verification: HmacVerification | TokenVerification | BasicAuthVerification
    event_type: Field | UnsetType = UNSET
    event_id: Field | UnsetType = UNSET
    max_body_bytes: Annotated[int, Meta(ge=1, le=MAX_BODY_LIMIT)] | UnsetType = UNSET


class InvalidDefinition(ValueError):
    """A definition the types accept but that can't work; the message names the field."""


def check_definition(definition: SourceDefinition) -> SourceDefinition:
    v = definition.verification
    if isinstance(v, HmacVerification):
        if "{timestamp}" in v.signed_content and isinstance(v.timestamp_header, UnsetType):
            raise InvalidDefinition("verification.timestamp_header: required when "
                                    "signed_content has {timestamp}")
        if "{timestamp}" not in v.signed_content and not isinstance(v.timestamp_header,
                                                                     UnsetType):
            raise InvalidDefinition("verification.timestamp_header: only with a signed_content "
                                    "that has {timestamp}")
    for name in ("event_type", "event_id"):
        where = getattr(definition, name)
        if isinstance(where, Field) and (isinstance(where.header, UnsetType)
                                         == isinstance(where.body, UnsetType)):
            raise InvalidDefinition(f"{name}: give exactly one of header or body")
    return definition


def _header_bytes(name: str) -> bytes:
    return name.lower().encode()


class TenantSourceConnector(Connector):
    """A tenant's source, built from its definition."""

    def __init__(self, name: str, definition: SourceDefinition) -> None:
        self.name = name  # type: ignore[misc]  # per instance here, a ClassVar elsewhere
        self.definition = definition
        self.max_body_bytes = (None if isinstance(definition.max_body_bytes, UnsetType)  # type: ignore[misc]
                               else definition.max_body_bytes)
        v = definition.verification
        self.algorithm = (v.algorithm if isinstance(v, HmacVerification)  # type: ignore[misc]
                          else TOKEN_ALGORITHM)
        named = [f.header for f in (definition.event_type, definition.event_id)
                 if isinstance(f, Field) and isinstance(f.header, str)]
        if isinstance(v, HmacVerification) and isinstance(v.timestamp_header, str):
            named.append(v.timestamp_header)
        self.evidence_headers = (b"content-type", b"user-agent",  # type: ignore[misc]
                                 *(_header_bytes(n) for n in named))

    def env_secret(self, settings: Settings) -> str:
        return ""  # a tenant's own source has only the tenant's secrets

    def verify(self, headers: Headers, body: bytes, keys: Sequence[Any]) -> Signed:
        v = self.definition.verification
        if isinstance(v, TokenVerification):
            verify_token(keys, require_header(headers, _header_bytes(v.header)).strip(),
                         derived=True)
            return Signed()
        if isinstance(v, BasicAuthVerification):
            verify_token(keys, _basic_credentials(require_header(headers, b"authorization")),
                         derived=True)
            return Signed()
        return self._verify_hmac(v, headers, body, keys)

    @staticmethod
    def _verify_hmac(v: HmacVerification, headers: Headers, body: bytes,
                     keys: Sequence[Hmac]) -> Signed:
        raw = require_header(headers, _header_bytes(v.header)).strip()
        prefix = v.prefix.encode()
        if not raw.startswith(prefix):
            raise InvalidSignature(f"{v.header} must start with {v.prefix!r}",
                                   signature_valid=False)
        signature = raw[len(prefix):]
        if v.encoding == "hex":
            signature = signature.lower()
        timestamp = None
        signed_prefix = b""
        if isinstance(v.timestamp_header, str):
            timestamp = parse_timestamp(require_header(headers, _header_bytes(v.timestamp_header)),
                                        v.timestamp_header)
            separator = v.signed_content[len("{timestamp}")]
            signed_prefix = str(timestamp).encode() + separator.encode()
        if not any(key.verify(body, (signature,), signed_prefix, v.encoding) for key in keys):
            raise InvalidSignature("signature does not match", signature_valid=False)
        return Signed(timestamp=timestamp)

    def normalize(self, headers: Headers, body: bytes) -> DomainEvent:
        doc = parse_json_object(body, self.name)
        event_type = self._value(self.definition.event_type, headers, doc, "event_type")
        event_id = self._value(self.definition.event_id, headers, doc, "event_id")
        return DomainEvent.from_part(doc, (), source=self.name,
                                     event_type=event_type or self.name,
                                     provider_event_id=event_id, occurred_at_unix=None)

    @staticmethod
    def _value(where: Field | UnsetType, headers: Headers, doc: dict[str, Any],
               what: str) -> str | None:
        if isinstance(where, UnsetType):
            return None
        if isinstance(where.header, str):
            value = header_identifier(headers, _header_bytes(where.header))
            if value is None:
                raise InvalidPayload(f"{what}: header {where.header} is missing",
                                     signature_valid=True)
            return value
        assert isinstance(where.body, str)
        found: Any = doc
        for key in where.body.split("."):
            found = found.get(key) if isinstance(found, dict) else None
        if isinstance(found, (int, float)) and not isinstance(found, bool):
            found = str(found)  # numeric ids are common
        return identifier(found, f"{what} ({where.body})", required=True)

    def check_freshness(self, signed: Signed, now: int, settings: Settings) -> None:
        v = self.definition.verification
        if isinstance(v, HmacVerification) and isinstance(v.timestamp_header, str):
            check_tolerance(signed, now, v.tolerance_seconds, v.timestamp_header)


def _basic_credentials(header: bytes) -> bytes:
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic" or not encoded:
        raise MissingSignature("Authorization must be Basic credentials", signature_valid=False)
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignature("Authorization credentials are not base64",
                               signature_valid=False) from None


_NAME = re.compile(NAME_PATTERN)


def valid_name(name: str) -> bool:
    """Whether a tenant source could have this (lower-cased) name: checked before any lookup,
    so a name that could never exist costs no query and no cache entry."""
    return _NAME.fullmatch(name) is not None


__all__ = ["HmacSha256", "SourceDefinition", "TenantSourceConnector", "check_definition",
           "valid_name"]
