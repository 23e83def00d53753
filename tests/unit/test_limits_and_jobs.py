"""Token buckets, backoff and the handler registry."""

from __future__ import annotations

import random
import uuid

import pytest

from relayforge.events import DomainEvent
from relayforge.jobs import HandlerRegistry, backoff_seconds, record_processed
from relayforge.security.limits import Buckets, TokenBucket, retry_after_seconds


def test_token_bucket_burst_then_rate():
    bucket = TokenBucket(rate=2, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0  # one token refilled in half a second
    assert retry_after_seconds(0.2) == 1 and retry_after_seconds(2.1) == 3


def test_zero_rate_bucket_never_refills():
    bucket = TokenBucket(rate=0, burst=1, now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(1000.0) == float("inf")
    assert retry_after_seconds(float("inf")) == 3600


def test_idle_tenant_buckets_are_evicted():
    buckets = Buckets(rate=1e9, burst=1, idle_seconds=0.0)  # refilled at once
    for _ in range(100):
        buckets.take(uuid.uuid4())
    buckets.take(uuid.uuid4())
    assert len(buckets) <= 2


def test_only_refilled_buckets_are_dropped_so_limits_hold():
    import time

    buckets = Buckets(rate=1000, burst=2, idle_seconds=300)  # refills in 2 ms
    assert buckets.sweep_seconds == 1.0  # at least a second between sweeps
    busy = uuid.uuid4()
    buckets.take(busy), buckets.take(busy)
    assert buckets.take(busy) > 0  # spent
    for _ in range(50):
        buckets.take(uuid.uuid4())
    buckets._sweep(time.monotonic() + 1)  # a second later every bucket has refilled
    assert len(buckets) == 0
    slow = Buckets(rate=0.01, burst=1, idle_seconds=300)  # refills in 100 s
    t = uuid.uuid4()
    slow.take(t)
    slow._sweep(time.monotonic() + 10)
    assert len(slow) == 1 and slow.take(t) > 0  # still limited after the sweep


def test_backoff_doubles_with_jitter_and_caps():
    rng = random.Random(7)
    for attempt, base in ((1, 0.1), (2, 0.2), (3, 0.4)):
        delay = backoff_seconds(attempt, 100, 10_000, rng)
        assert base / 2 <= delay <= base
    assert backoff_seconds(40, 100, 10_000, rng) <= 10.0


def test_handler_registry_most_specific_wins():
    registry = HandlerRegistry(
        "stripe=relayforge.jobs:apply_test_faults; "
        "stripe:invoice.paid=relayforge.jobs:backoff_seconds")
    event = DomainEvent("stripe", "invoice.paid", "e", None, None)
    assert registry.resolve(event).__name__ == "backoff_seconds"
    assert registry.resolve(DomainEvent("stripe", "x", None, None, None)).__name__ == \
        "apply_test_faults"
    assert registry.resolve(DomainEvent("github", "x", None, None, None)) is record_processed


@pytest.mark.parametrize("spec,why", [
    ("stripe", "is not key=module:callable"),
    ("stripe=nomodule", "is not key=module:callable"),
    ("stripe=nomodule:handler", "cannot load"),
    ("stripe=relayforge.jobs:nothing", "cannot load"),
    ("stripe=relayforge.jobs:__doc__", "is not callable"),  # exists, but a string
])
def test_bad_handler_spec_names_the_variable(spec, why):
    with pytest.raises(ValueError, match="WORKER__HANDLERS") as err:
        HandlerRegistry(spec)
    assert why in str(err.value)
