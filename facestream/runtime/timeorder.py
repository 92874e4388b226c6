"""Records of several partitions handed over in timestamp order (the detector's input).

kafka-python hands a poll's records partition by partition: a worker with a backlog on four
partitions of ``frames.v1`` works through one partition's fetched frames, then the next's.
With frames keyed by camera, one store's cameras sit on different partitions, so a backlog
(a replay of stored days, a detector back after an outage) would send one camera's frames of
the afternoon through before another's of the morning; the matcher, which decides a store's
faces in capture order from the detectors' camera progress, then sees a camera fall silent
for as long as its partition waits, stops waiting for it, and decides the others' faces first
(docs/pipeline.md, "Capture order").

:class:`TimeOrder` buffers what a poll returns, per partition, and hands records over by
their Kafka timestamp (a camera's publish time: the capture time, live or in a replay, which
publishes in capture order), the lowest first, as Kafka Streams does for the partitions of a
task. It hands nothing over while a partition it owns has records on the broker but none
fetched yet (its lag is known from the last fetch), up to ``wait_seconds``; then it goes on
without that partition, rather than stall every other. The runner polls only while fewer than
``low_water`` records are buffered or while a partition's records are awaited, so the buffers
stay bounded however long the backlog. (It does not pause partitions: kafka-python 3.0's
consumer parks the fetched records of a paused partition and, when another partition's
fetched records were drained meanwhile, never restores them nor fetches that partition
again: measured here, the partition starved.)

The runner commits only records it has handled: buffered records are read again after a
rebalance, a restart, or a batch that is retried (:meth:`TimeOrder.reset` says where to seek).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from kafka.structs import TopicPartition


class Timestamped(Protocol):
    """What a buffered record must have: its offset, and its Kafka timestamp (ms)."""

    @property
    def offset(self) -> int: ...

    @property
    def timestamp(self) -> int: ...


R = TypeVar("R", bound=Timestamped)


class TimeOrder(Generic[R]):
    """Buffers a consumer's records per partition and hands them over lowest timestamp first."""

    def __init__(
        self,
        consumer: Any,
        *,
        low_water: int,
        wait_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.low_water = low_water
        self.wait_seconds = wait_seconds
        self.clock = clock
        self._buffers: dict[TopicPartition, deque[R]] = {}
        self._blocked_since: float | None = None
        self._given_up: set[TopicPartition] = set()
        """Partitions waited for in vain: not waited for again until records of theirs come."""
        self.gave_up = 0
        """How many times a partition's fetch was waited for ``wait_seconds`` in vain."""

    def add(self, batch: Mapping[TopicPartition, Sequence[R]]) -> None:
        """Buffer a poll's records."""
        for tp, records in batch.items():
            if records:
                self._buffers.setdefault(tp, deque()).extend(records)
                self._given_up.discard(tp)

    def take(self, limit: int) -> list[R]:
        """Up to ``limit`` records, lowest timestamp first (ties: lowest partition), stopping
        where a partition must be fetched before anything later can go."""
        out: list[R] = []
        while len(out) < limit:
            heads = [(q[0].timestamp, tp.partition, tp) for tp, q in self._buffers.items() if q]
            if not heads or self._waiting_for_fetch():
                break
            _, _, tp = min(heads)
            out.append(self._buffers[tp].popleft())
        return out

    def pending(self) -> int:
        """Records buffered, not yet handed over."""
        return sum(len(q) for q in self._buffers.values())

    def ready(self) -> bool:
        """Whether :meth:`take` would hand something over now."""
        return self.pending() > 0 and not self._waiting_for_fetch(count=False)

    def wants_more(self) -> bool:
        """Whether to poll: fewer than ``low_water`` records buffered, or a partition's
        records awaited."""
        return self.pending() < self.low_water or not self.ready()

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions no longer ours: their buffered records go (the next owner reads them
        from the last commit)."""
        for tp in partitions:
            self._buffers.pop(tp, None)
            self._given_up.discard(tp)

    def reset(self) -> dict[TopicPartition, int]:
        """Drop every buffered record; per partition, the offset to seek back to so that
        they are read again."""
        seek = {tp: q[0].offset for tp, q in self._buffers.items() if q}
        self._buffers.clear()
        self._given_up.clear()
        return seek

    # -- internals ---------------------------------------------------------------------------

    def _waiting_for_fetch(self, count: bool = True) -> bool:
        """Whether an owned partition has records on the broker and none buffered, and has
        not yet been waited for ``wait_seconds``."""
        lagging = {
            tp
            for tp in self._owned() - self._given_up
            if not self._buffers.get(tp) and self._lags(tp)
        }
        if not lagging:
            self._blocked_since = None
            return False
        now = self.clock()
        if self._blocked_since is None:
            self._blocked_since = now
        if now - self._blocked_since < self.wait_seconds:
            return True
        if count:
            self.gave_up += len(lagging)
            self._given_up |= lagging
            self._blocked_since = None
        return False

    def _owned(self) -> set[TopicPartition]:
        return set(self.consumer.assignment())

    def _lags(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` has records past our position (unknown before its first fetch)."""
        try:
            high = self.consumer.highwater(tp)
            if high is None:
                return True
            position = self.consumer.position(tp)
        except Exception:  # not assigned any more (a rebalance under way): nothing to wait for
            return False
        return position is not None and position < high
