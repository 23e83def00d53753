"""The one import point for the hot-path kernels: the compiled ones when built, else the Python
twin. RELAYFORGE_NO_EXTENSIONS=1 forces the twin (the test suite runs both)."""

from __future__ import annotations

import os

if os.environ.get("RELAYFORGE_NO_EXTENSIONS") == "1":
    from relayforge._kernels_py import (
        IMPLEMENTATION,
        HmacSha256,
        constant_time_eq,
        hex_encode,
        parse_github_signature,
        parse_stripe_signature,
        sha256_hex,
    )
else:
    try:
        from relayforge._native import (  # type: ignore[import-not-found,no-redef]
            IMPLEMENTATION,
            HmacSha256,
            constant_time_eq,
            hex_encode,
            parse_github_signature,
            parse_stripe_signature,
            sha256_hex,
        )
    except ImportError:  # not built (e.g. RELAYFORGE_NO_EXTENSIONS=1 at install time)
        from relayforge._kernels_py import (
            IMPLEMENTATION,
            HmacSha256,
            constant_time_eq,
            hex_encode,
            parse_github_signature,
            parse_stripe_signature,
            sha256_hex,
        )

__all__ = [
    "IMPLEMENTATION",
    "HmacSha256",
    "constant_time_eq",
    "hex_encode",
    "parse_github_signature",
    "parse_stripe_signature",
    "sha256_hex",
]
