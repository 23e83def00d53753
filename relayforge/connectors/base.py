"""What every provider connector implements: verify → parse → normalize into a DomainEvent.

A connector is pure: bytes and headers in, a DomainEvent or an error out. Adding a provider is
adding one module and listing it in connectors/__init__.py.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from relayforge.errors import InvalidPayload, InvalidSignature, MissingSignature, StaleTimestamp
from relayforge.events import DomainEvent, has_control
from relayforge.kernels import HmacSha256, token_key
from relayforge.settings import Settings

Headers = Mapping[bytes, bytes]  # lower-cased header names
MAX_IDENTIFIER = 255
TOKEN_PROBE = b"relayforge token check"


@dataclass(frozen=True, slots=True)
class Signed:
    """What the signature check learned: the signed timestamp where the scheme has one."""

    timestamp: int | None = None


MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class HeaderDoc:
    """A request header a source reads, as /openapi.json documents it."""

    name: str
    description: str
    required: bool = False


ANY_OBJECT: dict[str, Any] = {"type": "object"}


class Connector:
    name: ClassVar[str]
    # What /openapi.json says of the source (generated from these; see http/openapi.py):
    # a summary, the headers it reads, the body's JSON Schema and content types, and the
    # schema of an answer given at once (Slack's url_verification challenge), if any.
    summary: ClassVar[str] = ""
    header_docs: ClassVar[tuple[HeaderDoc, ...]] = ()
    body_schema: ClassVar[dict[str, Any]] = ANY_OBJECT
    content_types: ClassVar[tuple[str, ...]] = ("application/json",)
    direct_answer_schema: ClassVar[dict[str, Any] | None] = None
    # The largest body this source takes; None: HARDENING__MAX_BODY_BYTES.
    max_body_bytes: ClassVar[int | None] = MIB
    # The HMAC its keys use when not SHA-256 in hex (a tenant-defined source's); None: the
    # HMAC-SHA256 keys every built-in connector verifies with.
    algorithm: ClassVar[str | None] = None
    # Stripe-style anti-replay: the provider event id is accepted once per tenant (409 after).
    replay_protected: ClassVar[bool] = False
    # Headers kept in the inbox row as evidence (never secrets).
    evidence_headers: ClassVar[tuple[bytes, ...]] = ()

    def env_secret(self, settings: Settings) -> str:
        raise NotImplementedError

    def signing_key(self, secret: str) -> bytes:
        """The HMAC key a stored secret stands for (most schemes: its bytes)."""
        return secret.encode()

    def direct_answer(self, headers: Headers, body: bytes) -> dict[str, Any] | None:
        """A verified request the provider wants answered at once, with no job (Slack's
        url_verification); None for a webhook."""
        return None

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


def verify_base64(keys: Sequence[HmacSha256], body: bytes, signatures: Sequence[bytes],
                  prefix: bytes = b"") -> None:
    """As verify_hex, for schemes that send the MAC in base64 (compared in constant time)."""
    hexed = []
    for signature in signatures:
        try:
            hexed.append(binascii.hexlify(base64.b64decode(signature, validate=True)))
        except (binascii.Error, ValueError):
            continue  # not base64: matches nothing
    verify_hex(keys, body, hexed, prefix)


def verify_token(keys: Sequence[HmacSha256], token: bytes, *, derived: bool = False) -> None:
    """A shared token sent as is (GitLab's X-Gitlab-Token, basic auth): equal to a secret, in
    constant time. The keys hold the secrets only as HMAC key schedules, so the token is made
    one too and both sign the same probe: equal MACs, equal keys. `derived`: the keys were
    made with kernels.token_key (fixed length, so only the very secret matches); else a NUL
    is refused, which HMAC's zero padding would ignore."""
    if derived:
        token = token_key(token)
    elif b"\x00" in token:
        raise InvalidSignature("token does not match", signature_valid=False)
    probe = HmacSha256(token).hexdigest(TOKEN_PROBE).encode()
    for key in keys:
        if key.verify(TOKEN_PROBE, (probe,)):
            return
    raise InvalidSignature("token does not match", signature_valid=False)


def parse_timestamp(raw: bytes | str | None, what: str) -> int:
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else (raw or "")
    if not text.isdigit() or len(text) > 15:
        raise InvalidSignature(f"{what} must be a unix timestamp", signature_valid=False)
    return int(text)


def check_tolerance(signed: Signed, now: int, tolerance: int, what: str) -> None:
    if signed.timestamp is None or abs(now - signed.timestamp) > tolerance:
        raise StaleTimestamp(f"{what} is outside the {tolerance}s tolerance", signature_valid=True)


def parse_json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidPayload(f"{what} body is not valid JSON: {exc}",
                             signature_valid=True) from None
    if not isinstance(doc, dict):
        raise InvalidPayload(f"{what} body must be a JSON object", signature_valid=True)
    return doc


def identifier(value: Any, field_name: str, *, required: bool) -> str | None:
    """A provider-supplied name or id: a string that is not blank (whitespace only), of
    printable length, without control characters."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidPayload(f"{field_name} must be a non-blank string", signature_valid=True)
    if len(value) > MAX_IDENTIFIER or has_control(value):
        raise InvalidPayload(
            f"{field_name} must be at most {MAX_IDENTIFIER} characters without control "
            "characters", signature_valid=True,
        )
    return value


def header_identifier(headers: Headers, name: bytes) -> str | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidPayload(f"{name.decode()} header must be ASCII",
                             signature_valid=True) from None
    return identifier(text, f"{name.decode()} header", required=True)
