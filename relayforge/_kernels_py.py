"""Pure-Python twin of native/_native.pyx: the same API and results, used when the compiled
kernels are absent or RELAYFORGE_NO_EXTENSIONS=1."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

IMPLEMENTATION = "python"


class Hmac:
    """HMAC under one key with SHA-1, SHA-256 or SHA-512, the key schedule computed once."""

    __slots__ = ("_mac",)

    def __init__(self, algorithm: str, key: bytes) -> None:
        if algorithm not in ("sha1", "sha256", "sha512"):
            raise ValueError("algorithm must be sha1, sha256 or sha512")
        if not isinstance(key, bytes):
            raise TypeError("key must be bytes")
        self._mac = hmac.new(key, digestmod=algorithm)

    def _compute(self, body: bytes, prefix: bytes) -> hmac.HMAC:
        if not isinstance(body, bytes) or not isinstance(prefix, bytes):
            raise TypeError("body and prefix must be bytes")
        mac = self._mac.copy()
        if prefix:
            mac.update(prefix)
        mac.update(body)
        return mac

    def digest(self, body: bytes, prefix: bytes = b"") -> bytes:
        return self._compute(body, prefix).digest()

    def hexdigest(self, body: bytes, prefix: bytes = b"") -> str:
        return self._compute(body, prefix).hexdigest()

    def b64digest(self, body: bytes, prefix: bytes = b"") -> str:
        return base64.b64encode(self._compute(body, prefix).digest()).decode("ascii")

    def verify(self, body: bytes, signatures: Iterable[bytes], prefix: bytes = b"",
               encoding: str = "hex") -> bool:
        if encoding not in ("hex", "base64"):
            raise ValueError("encoding must be hex or base64")
        expected = (self.hexdigest(body, prefix) if encoding == "hex"
                    else self.b64digest(body, prefix)).encode("ascii")
        ok = False
        for sig in signatures:
            if hmac.compare_digest(sig, expected):
                ok = True
        return ok


class HmacSha256(Hmac):
    """HMAC-SHA256 under one key, with the key schedule computed once."""

    __slots__ = ()

    def __init__(self, key: bytes) -> None:
        super().__init__("sha256", key)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_stripe_signature(header: bytes) -> tuple[int, bytes, list[bytes]]:
    t: int | None = None
    t_raw = b""
    signatures: list[bytes] = []
    for item in header.split(b","):
        key, eq, value = item.partition(b"=")
        if not eq:
            continue
        key = key.strip(b" \t")
        value = value.strip(b" \t")
        if key == b"t":
            if t is not None:
                raise ValueError("more than one t= in Stripe-Signature")
            if not value or len(value) > 18 or not all(48 <= c <= 57 for c in value):
                raise ValueError("t= is not a unix timestamp")
            t, t_raw = int(value), value
        elif key == b"v1":
            signatures.append(value)
    if t is None:
        raise ValueError("no t= in Stripe-Signature")
    if not signatures:
        raise ValueError("no v1= signature in Stripe-Signature")
    return t, t_raw, signatures


def parse_github_signature(header: bytes) -> bytes | None:
    if header.startswith(b"sha256="):
        return header[7:]
    return None
