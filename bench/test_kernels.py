"""Kernel benchmarks: compiled vs pure-Python twin vs the naive per-request stdlib call.

    .venv/bin/python -m pytest bench/test_kernels.py --benchmark-enable \
        --benchmark-columns=ops,mean -q

`relayforge bench` prints ops/s and ratios in a table.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from relayforge.benchmark import IMPLS, SECRET, SIZES, naive_verify
from relayforge.benchmark import body_of as _body


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("impl", list(IMPLS))
def test_hmac_verify(benchmark, impl, size):
    k = IMPLS[impl]
    body = _body(size)
    mac = k.HmacSha256(SECRET)
    signature = [mac.hexdigest(body).encode()]
    assert benchmark(mac.verify, body, signature)


@pytest.mark.parametrize("size", SIZES)
def test_hmac_verify_naive_stdlib(benchmark, size):
    body = _body(size)
    signature = hmac.new(SECRET, body, hashlib.sha256).hexdigest().encode()
    assert benchmark(naive_verify, body, signature)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("impl", list(IMPLS))
def test_sha256_hex(benchmark, impl, size):
    body = _body(size)
    assert len(benchmark(IMPLS[impl].sha256_hex, body)) == 64


@pytest.mark.parametrize("impl", list(IMPLS))
def test_parse_stripe_signature(benchmark, impl):
    header = b"t=1700000000,v1=" + b"a" * 64 + b",v1=" + b"b" * 64 + b",v0=" + b"c" * 64
    assert benchmark(IMPLS[impl].parse_stripe_signature, header)[0] == 1700000000
