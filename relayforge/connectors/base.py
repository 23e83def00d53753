"""What every provider connector implements: verify → parse → normalize into a DomainEvent.

A connector is pure: bytes and headers in, a DomainEvent or an error out. Adding a provider is
adding one module and listing it in connectors/__init__.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from relayforge.errors import InvalidPayload, InvalidSignature, MissingSignature
from relayforge.events import DomainEvent
from relayforge.kernels import HmacSha256
from relayforge.settings import Settings

Headers = Mapping[bytes, bytes]  # lower-cased header names
MAX_IDENTIFIER = 255


@dataclass(frozen=True, slots=True)
class Signed:
    """What the signature check learned: the signed timestamp where the scheme has one."""

    timestamp: int | None = None


class Connector:
    name: ClassVar[str]
    # Stripe-style anti-replay: the provider event id is accepted once per tenant (409 after).
    replay_protected: ClassVar[bool] = False
    # Headers kept in the inbox row as evidence (never secrets).
    evidence_headers: ClassVar[tuple[bytes, ...]] = ()

    def env_secret(self, settings: Settings) -> str:
        raise NotImplementedError

    def verify(self, headers: Headers, body: bytes, keys: Sequence[HmacSha256]) -> Signed:
        raise NotImplementedError

    def normalize(self, headers: Headers, body: bytes) -> DomainEvent:
        raise NotImplementedError

    def check_freshness(self, signed: Signed, now: int, settings: Settings) -> None:
        """Raise StaleTimestamp when the signed timestamp is outside the tolerance."""


def require_header(headers: Headers, name: bytes) -> bytes:
    value = headers.get(name)
    if not value:
        raise MissingSignature(f"missing {name.decode()} header", signature_valid=False)
    return value


def verify_hex(
    keys: Sequence[HmacSha256], body: bytes, signatures: Sequence[bytes], prefix: bytes = b""
) -> None:
    """Accept when any active key signed the body; every key is tried (rotation overlap)."""
    ok = False
    for key in keys:
        if key.verify(body, signatures, prefix):
            ok = True
    if not ok:
        raise InvalidSignature("signature does not match", signature_valid=False)


def parse_json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidPayload(f"{what} body is not valid JSON: {exc}", signature_valid=True) from None
    if not isinstance(doc, dict):
        raise InvalidPayload(f"{what} body must be a JSON object", signature_valid=True)
    return doc


def identifier(value: Any, field_name: str, *, required: bool) -> str | None:
    """A provider-supplied name or id: a string that is not blank (whitespace only), of
    printable length, without NUL."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidPayload(f"{field_name} must be a non-blank string", signature_valid=True)
    if len(value) > MAX_IDENTIFIER or "\x00" in value:
        raise InvalidPayload(
            f"{field_name} must be at most {MAX_IDENTIFIER} characters without NUL",
            signature_valid=True,
        )
    return value


def header_identifier(headers: Headers, name: bytes) -> str | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidPayload(f"{name.decode()} header must be ASCII", signature_valid=True) from None
    return identifier(text, f"{name.decode()} header", required=True)
