"""In-memory limits: the global ingress token bucket, one bucket per tenant, the budget of
unverified requests per client address, and the budget of body bytes in flight.

The ingress and tenant limits are per deployment: each process enforces its share of them
(shares.py), rescaled as processes come and go.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

from relayforge.errors import Overloaded, RateLimited, RelayforgeError

K = TypeVar("K", bound=Hashable)


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.tokens = self.burst
        self.updated = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        if self.rate <= 0:
            return math.inf
        return (1.0 - self.tokens) / self.rate

    def rescale(self, rate: float, burst: float) -> None:
        """New limits (a new share of the deployment's): tokens held beyond the new burst go."""
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = min(self.tokens, self.burst)

    def _refilled(self, now: float) -> float:
        """The tokens it would hold at `now` (take() does the same inline: it is per request)."""
        return min(self.burst, self.tokens + (now - self.updated) * self.rate)

    def has_token(self, now: float) -> bool:
        return self._refilled(now) >= 1.0

    def is_full(self, now: float) -> bool:
        return self._refilled(now) >= self.burst


class Buckets(Generic[K]):
    """One bucket per key (a tenant, a client address). A bucket that has refilled is the same
    as a new one, so the sweep drops every full bucket; it runs once per refill time (burst /
    rate, at least a second, at most `idle_seconds`). Memory is bounded by the keys seen within
    about that time."""

    def __init__(self, rate: float, burst: float, idle_seconds: float) -> None:
        self._idle_seconds = idle_seconds
        self._buckets: dict[K, TokenBucket] = {}
        self.rescale(rate, burst)
        self._next_sweep = time.monotonic() + self.sweep_seconds

    def rescale(self, rate: float, burst: float) -> None:
        """New limits for every key (a new share of the deployment's)."""
        self.rate, self.burst = rate, max(burst, 1.0)
        refill = self.burst / rate if rate > 0 else self._idle_seconds
        self.sweep_seconds = min(self._idle_seconds, max(MIN_SWEEP_SECONDS, refill))
        for bucket in self._buckets.values():
            bucket.rescale(self.rate, self.burst)

    def take(self, key: K) -> float:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def has_token(self, key: K) -> bool:
        bucket = self._buckets.get(key)
        return bucket is None or bucket.has_token(time.monotonic())

    def _sweep(self, now: float) -> None:
        self._buckets = {t: b for t, b in self._buckets.items() if not b.is_full(now)}
        self._next_sweep = now + self.sweep_seconds

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait)) if math.isfinite(wait) else 3600


class UnverifiedBudget:
    """What a client address may spend on requests that prove nothing: failed signatures,
    unknown tenants and sources, wrong API keys and console sign-ins, CSP reports
    (HARDENING__UNVERIFIED_RATE_LIMIT_PER_SECOND, burst HARDENING__UNVERIFIED_BURST). Such
    requests are never charged to the ingress or a tenant's bucket, so junk can't starve paying
    tenants. An address that has spent it gets 429 for its next unverified request instead of
    the refusal it earned; a request that verifies is never refused for it (providers share
    addresses across tenants)."""

    def __init__(self, rate: float, burst: int, idle_seconds: float) -> None:
        self._addresses: Buckets[str] = Buckets(rate, burst, idle_seconds)

    def charge(self, address: str) -> RateLimited | None:
        """Charge one unverified request: None, or the 429 when the address has spent it."""
        wait = self._addresses.take(address)
        if wait:
            return RateLimited("too many unverified requests from this address",
                               retry_after=retry_after_seconds(wait))
        return None

    def refusal(self, address: str, earned: RelayforgeError) -> RelayforgeError:
        """Charge one unverified request: the refusal it earned, or the 429."""
        return self.charge(address) or earned

    def has_budget(self, address: str) -> bool:
        """Whether the address may still cost a lookup on an unverified request."""
        return self._addresses.has_token(address)


OVERLOADED_RETRY_AFTER_SECONDS = 1
MIN_SWEEP_SECONDS = 1.0


BODY_MEMORY_FACTOR = 4


class BodyBudget:
    """The memory bodies may take at once in this process (HARDENING__MAX_INFLIGHT_BODY_BYTES):
    one 25 MiB body per connection could otherwise exhaust it. A body counts BODY_MEMORY_FACTOR
    times its size (measured: the raw bytes, the normalized event's JSON and the database
    write's parameters each hold a copy while it is in flight). A request that would pass the
    budget is answered 503 `overloaded` with Retry-After; what it held is given back when it
    ends."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0

    def holding(self) -> Held:
        """`with budget.holding() as held:` what `held` takes is given back on leaving."""
        return Held(self)


class Held:
    """A request's share of the budget (a plain context manager: one per request, and a
    generator-based one costs several times as much)."""

    __slots__ = ("_budget", "bytes")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.bytes = 0

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        self._budget.in_use -= self.bytes
        self.bytes = 0

    def take(self, body_bytes: int) -> None:
        n = body_bytes * BODY_MEMORY_FACTOR
        budget = self._budget
        if budget.in_use + n > budget.capacity:
            raise Overloaded("too many body bytes in flight; try again shortly",
                             retry_after=OVERLOADED_RETRY_AFTER_SECONDS)
        budget.in_use += n
        self.bytes += n
