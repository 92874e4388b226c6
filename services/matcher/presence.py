"""Which matchers are alive, and which of them have applied an erasure: both in Redis.

Every matcher heartbeats into the sorted set ``{prefix}:matchers`` (member = matcher id,
score = wall time) and, for every recent tombstone it applies, writes ``matcher id -> time``
into the hash ``{prefix}:erasure:{subject}``. ``facestream erase`` produces the tombstone, then
waits until every matcher that was alive when it started has acknowledged (or stopped being
alive). An acknowledgement means "this matcher holds no copy of the subject any more": a matcher
that never held the subject acknowledges too, so that erase need not know who held what.

Redis being away must not stop matching: failures are logged and counted, acknowledgements wait
in memory and are written at the next tick.
"""

from __future__ import annotations

import logging
import time
from typing import Final

import redis

from facestream.services.matcher import metrics

log = logging.getLogger(__name__)

LIVE_SECONDS: Final = 30.0
"""A matcher whose last heartbeat is older than this is taken for dead."""
ACK_TTL_SECONDS: Final = 7 * 24 * 3600
MAX_PENDING_ACKS: Final = 100_000


def matchers_key(prefix: str) -> str:
    return f"{prefix}:matchers"


def erasure_key(prefix: str, subject: str) -> str:
    return f"{prefix}:erasure:{subject}"


def live_matchers(client: redis.Redis, prefix: str, within: float = LIVE_SECONDS) -> set[str]:
    """Ids of the matchers that heartbeated in the last ``within`` seconds."""
    members = client.zrangebyscore(matchers_key(prefix), time.time() - within, "+inf")
    return {m.decode() if isinstance(m, bytes) else str(m) for m in members}


def acknowledgements(client: redis.Redis, prefix: str, subject: str) -> dict[str, float]:
    """Matcher id -> time at which it applied the erasure of ``subject``."""
    raw = client.hgetall(erasure_key(prefix, subject))
    return {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in raw.items()}


class Presence:
    """One matcher's heartbeat and erasure acknowledgements."""

    def __init__(
        self, client: redis.Redis, prefix: str, matcher_id: str, interval: float = 5.0
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.matcher_id = matcher_id
        self.interval = interval
        self._last_beat = 0.0
        self._pending: list[tuple[str, float]] = []

    def ack(self, subject: str) -> None:
        """Record that ``subject`` is erased here (written to Redis at the next :meth:`tick`)."""
        if len(self._pending) >= MAX_PENDING_ACKS:
            # Redis has been away for a long while; erase reports these as unconfirmed.
            log.error("dropping the acknowledgement of %s: %d pending", subject, len(self._pending))
            return
        self._pending.append((subject, time.time()))

    def tick(self, *, force: bool = False) -> None:
        """Write pending acknowledgements, and heartbeat when one is due."""
        try:
            if self._pending:
                pipe = self.client.pipeline(transaction=False)
                for subject, at in self._pending:
                    key = erasure_key(self.prefix, subject)
                    pipe.hset(key, self.matcher_id, at)
                    pipe.expire(key, ACK_TTL_SECONDS)
                pipe.execute()
                log.info("acknowledged %d erasure(s) in Redis", len(self._pending))
                self._pending.clear()
            now = time.time()
            if force or now - self._last_beat >= self.interval:
                key = matchers_key(self.prefix)
                self.client.zadd(key, {self.matcher_id: now})
                # Forget matchers gone for a day, so that the set stays small.
                self.client.zremrangebyscore(key, "-inf", now - 24 * 3600)
                self._last_beat = now
        except redis.RedisError as exc:
            metrics.REDIS_ERRORS.inc()
            log.warning(
                "Redis unavailable (%s); %d acknowledgement(s) pending", exc, len(self._pending)
            )

    def leave(self) -> None:
        """Leave the heartbeat set (a clean stop: erase stops waiting for this matcher)."""
        try:
            self.tick()
            self.client.zrem(matchers_key(self.prefix), self.matcher_id)
        except redis.RedisError as exc:
            log.warning("could not leave the heartbeat set: %s", exc)
