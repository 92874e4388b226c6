"""Token buckets per API key and per client address, in memory, one set per process.

A bucket holds up to ``burst`` tokens and refills at ``per_minute / 60`` tokens a second; each
request takes one. With several replicas each has its own buckets, so a client can get up to
``replicas x`` the limit: the limit is there to stop a runaway client and slow key guessing,
not to meter usage exactly.

Memory is bounded: at most ``max_buckets`` are kept. A bucket that has refilled to ``burst`` is
the same as none at all, so idle buckets are dropped first; if every bucket is still in use, the
least recently used one is dropped (its owner starts again with a full bucket, which errs on the
side of letting a request through).

Used from the event loop only (the middleware), so it needs no lock.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Buckets by key (an API key's tag, or a client address)."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        max_buckets: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0 or burst < 1 or max_buckets < 1:
            raise ValueError("per_minute must be > 0, burst and max_buckets >= 1")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_buckets = max_buckets
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0.0 when the request may go on, otherwise the seconds
        until a token will be there (for ``Retry-After``)."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _make_room(self, now: float) -> None:
        full_after = self.burst / self.rate
        # Least recently used first: drop the ones idle long enough to be full again.
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if now - oldest.updated < full_after:
                break
            del self._buckets[key]
        while len(self._buckets) >= self.max_buckets:
            self._buckets.popitem(last=False)


@dataclass(frozen=True)
class RateLimits:
    """The buckets of one app: ``requests`` per API key (or per address for a login cookie),
    ``attempts`` per client address for wrong keys and ``POST /login``. None: no limit."""

    requests: TokenBuckets | None
    attempts: TokenBuckets | None


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
