"""The one import point for the hot-path kernels: the compiled ones when built, else the Python
twin. RELAYFORGE_NO_EXTENSIONS=1 forces the twin (the test suite runs both)."""

from __future__ import annotations

import hashlib
import os
from types import ModuleType
from typing import TYPE_CHECKING

__all__ = [
    "IMPLEMENTATION",
    "Hmac",
    "HmacSha256",
    "parse_github_signature",
    "parse_stripe_signature",
    "sha256_hex",
]


def _load() -> ModuleType:
    if os.environ.get("RELAYFORGE_NO_EXTENSIONS") != "1":
        try:
            from relayforge import _native

            return _native
        except ImportError:  # not built (installed with RELAYFORGE_NO_EXTENSIONS=1)
            pass
    from relayforge import _kernels_py

    return _kernels_py


if TYPE_CHECKING:  # both implementations have this API (relayforge/_native.pyi)
    from relayforge._kernels_py import (
        IMPLEMENTATION,
        Hmac,
        HmacSha256,
        parse_github_signature,
        parse_stripe_signature,
        sha256_hex,
    )
else:
    _impl = _load()
    globals().update({name: getattr(_impl, name) for name in __all__})


# Keys for a token compared with a secret (a tenant source's token or basic auth): made from a
# fixed-length digest of the secret, because HMAC's own key handling pads short keys with zeros
# and hashes long ones, which made `user:pass\0` equal `user:pass` and SHA-256(secret) equal a
# secret longer than 64 bytes.
TOKEN_ALGORITHM = "token"


def token_key(token: bytes) -> bytes:
    return hashlib.sha256(b"relayforge token\x00" + token).digest()
