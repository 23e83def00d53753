"""`relayforge bench`: ops/s of the hot-path kernels, compiled vs Python twin vs the naive
per-request stdlib call, with ratios. (bench/run_load.py measures the whole server.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from typing import Any

from relayforge import _kernels_py

try:
    from relayforge import _native

    IMPLS: dict[str, Any] = {"python": _kernels_py, "native": _native}
except ImportError:  # built without extensions
    IMPLS = {"python": _kernels_py}

SIZES = (256, 1024, 4096, 65536)
SECRET = b"whsec_benchmark_secret_0123456789"


def naive_verify(body: bytes, signature: bytes) -> bool:
    """What webhook code usually does: a fresh HMAC per request, then compare_digest."""
    expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, signature)


def body_of(size: int) -> bytes:
    return os.urandom(size // 2).hex().encode()[:size]


def _rate(fn: Callable[..., object], *args: object, seconds: float = 0.4) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(1000):
            fn(*args)
        n += 1000
    return n / elapsed


def main() -> None:
    header = b"t=1700000000,v1=" + b"a" * 64 + b",v1=" + b"b" * 64
    print(f"{'case':<28}{'bytes':>7}{'native ops/s':>15}{'python ops/s':>15}{'naive ops/s':>14}"
          f"{'native/naive':>14}")
    for size in SIZES:
        body = body_of(size)
        sig = hmac.new(SECRET, body, hashlib.sha256).hexdigest().encode()
        rates = {name: _rate(k.HmacSha256(SECRET).verify, body, [sig]) for name, k in IMPLS.items()}
        naive = _rate(naive_verify, body, sig)
        native = rates.get("native", float("nan"))
        print(f"{'hmac verify':<28}{size:>7}{native:>15,.0f}{rates['python']:>15,.0f}"
              f"{naive:>14,.0f}{native / naive:>13.2f}x")
    for algorithm, encoding in (("sha1", "hex"), ("sha512", "base64")):  # tenant sources
        size = 1024
        body = body_of(size)
        raw = hmac.new(SECRET, body, algorithm).digest()
        sig = raw.hex().encode() if encoding == "hex" else base64.b64encode(raw)
        rates = {name: _rate(k.Hmac(algorithm, SECRET).verify, body, [sig], b"", encoding)
                 for name, k in IMPLS.items()}
        naive = _rate(lambda b, a=algorithm: hmac.new(SECRET, b, a).digest(), body)
        native = rates.get("native", float("nan"))
        print(f"{f'hmac {algorithm} {encoding} verify':<28}{size:>7}{native:>15,.0f}"
              f"{rates['python']:>15,.0f}{naive:>14,.0f}{native / naive:>13.2f}x")
    for size in SIZES:
        body = body_of(size)
        rates = {name: _rate(k.sha256_hex, body) for name, k in IMPLS.items()}
        naive = _rate(lambda b: hashlib.sha256(b).hexdigest(), body)
        native = rates.get("native", float("nan"))
        print(f"{'sha256 hex':<28}{size:>7}{native:>15,.0f}{rates['python']:>15,.0f}"
              f"{naive:>14,.0f}{native / naive:>13.2f}x")
    rates = {name: _rate(k.parse_stripe_signature, header) for name, k in IMPLS.items()}
    native = rates.get("native", float("nan"))
    print(f"{'parse Stripe-Signature':<28}{len(header):>7}{native:>15,.0f}"
          f"{rates['python']:>15,.0f}{'':>14}{native / rates['python']:>13.2f}x (vs python)")


