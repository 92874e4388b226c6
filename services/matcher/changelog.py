"""Group-less reads of the compacted topics the matcher mirrors in memory.

``members.v1`` and ``identities.v1`` are changelogs: the matcher reads them from the start into
galleries, then follows them. These reads use a consumer of their own with manual assignment
and no group (no offsets are committed: the state is always rebuilt from the topic), polled
from the worker's own thread, so galleries change only between records, never during one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from kafka.structs import TopicPartition

from facestream.runtime import kafka_clients
from facestream.runtime.kafka_clients import KafkaSettings
from facestream.runtime.logs import log_context
from facestream.runtime.runner import KafkaRecord, where
from facestream.services.matcher import metrics

log = logging.getLogger(__name__)

Apply = Callable[[KafkaRecord], None]
"""Called with each ``ConsumerRecord``, in offset order within its partition, inside the
record's log context (its log lines carry the record's place)."""

# Tombstones older than this are history: a rebuild applies them but does not acknowledge them
# again (an erasure waits seconds for its acknowledgements, not hours).
ACK_WINDOW_SECONDS = 3600.0

FETCH_BYTES = 16 * 1024 * 1024
"""The most one fetch brings of a partition. A rebuild reads a partition from its start and
waits for each fetch: with kafka-python's default of 1 MiB, one round trip per 1,000 identity
records (a one-off measurement on the local broker, 30,000 records: 6 s to fetch, 0.6 s with
16 MiB, both with the ``crc32c`` package; see docs/pipeline-benchmarks.md on what bounds a
rebuild)."""


class ChangelogError(RuntimeError):
    """A changelog could not be read (missing topic, or not to its end in time)."""


def of_another_model(tier: str, what: str, model: str, mine: str) -> bool:
    """Whether a changelog record's encodings (``what``: "member m-1", ...) are of another
    encoder than this matcher's; if so it is counted and logged, for the caller to skip.
    Distances between two models' encodings mean nothing: they never share a gallery."""
    if model == mine:
        return False
    metrics.SKIPPED.labels(tier, "model_mismatch").inc()
    log.warning("%s is of %s, not %s; skipped", what, model, mine)
    return True


def is_recent(record: KafkaRecord, window: float = ACK_WINDOW_SECONDS) -> bool:
    """Whether ``record`` was produced within ``window`` seconds (its CreateTime)."""
    return bool(record.timestamp / 1000.0 >= time.time() - window)


FETCH_WAIT_MS = 20
"""How long the broker may hold a fetch of the changelog that finds nothing new. The matcher
polls its changelogs without waiting between batches, which leaves a fetch in flight, and
kafka-python sends the end-offsets request of the next catch-up after it: with the default of
500 ms, every batch waited half a second for nothing (the matcher's p50 in the end-to-end
benchmark, ``python -m benchmarks.pipeline --only latency``, was 0.73 s; 0.03 s with 20 ms)."""


class ChangelogReader:
    """One consumer over some partitions of one compacted topic, applying every record."""

    def __init__(self, kafka: KafkaSettings, topic: str, apply: Apply, *, client_id: str) -> None:
        self.topic = topic
        self._apply = apply
        self.consumer = kafka_clients.consumer(
            kafka,
            group_id=None,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES,
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )

    def _tps(self, partitions: Iterable[int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(set(partitions))]

    def partitions(self, timeout: float) -> list[int]:
        """The topic's partitions (waits for metadata, at most ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.consumer.partitions_for_topic(self.topic)
            if found:
                return sorted(found)
            if time.monotonic() > deadline:
                raise ChangelogError(f"topic {self.topic} not found (is the stack set up?)")
            time.sleep(0.2)

    def assign(self, partitions: Iterable[int]) -> None:
        self.consumer.assign(self._tps(partitions))

    def rewind(self, partitions: Iterable[int]) -> None:
        """Read ``partitions`` again from their first record."""
        tps = self._tps(partitions)
        if tps:
            self.consumer.seek_to_beginning(*tps)

    def seek(self, partition: int, offset: int) -> None:
        """Read ``partition`` from ``offset`` on (the tail after a snapshot)."""
        self.consumer.seek(TopicPartition(self.topic, partition), offset)

    def first_offset(self, partition: int) -> int:
        """The partition's first offset still held by the broker."""
        tp = TopicPartition(self.topic, partition)
        return int(self.consumer.beginning_offsets([tp])[tp])

    def position(self, partition: int) -> int:
        """The offset of the next record the reader will apply in ``partition``."""
        return int(self.consumer.position(TopicPartition(self.topic, partition)))

    def skip_to_end(self, partitions: Iterable[int]) -> None:
        """Follow ``partitions`` from now on only. Resolved at once (not lazily at the next
        poll) so that nothing produced after this call is missed."""
        tps = self._tps(partitions)
        if tps:
            self.consumer.seek_to_end(*tps)
            for tp in tps:
                self.consumer.position(tp)

    def poll(self, timeout_ms: int = 0) -> int:
        """Apply whatever has arrived (waiting at most ``timeout_ms``); returns the count."""
        applied = 0
        for records in self.consumer.poll(timeout_ms=timeout_ms, max_records=500).values():
            for record in records:
                with log_context(where(record)):
                    self._apply(record)
                applied += 1
        return applied

    def catch_up(self, partitions: Iterable[int], timeout: float) -> int:
        """Apply records until every partition in ``partitions`` reaches the end offset it has
        now. Records of other assigned partitions that arrive meanwhile are applied too."""
        tps = self._tps(partitions)
        if not tps:
            return 0
        ends = self.consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        applied = 0
        while True:
            behind = [tp for tp in tps if self.consumer.position(tp) < ends[tp]]
            if not behind:
                return applied
            if time.monotonic() > deadline:
                where = ", ".join(
                    f"{tp.partition}@{self.consumer.position(tp)}/{ends[tp]}" for tp in behind
                )
                raise ChangelogError(
                    f"{self.topic} not read to its end in {timeout:.0f} s: {where}"
                )
            applied += self.poll(timeout_ms=200)

    def close(self) -> None:
        self.consumer.close(autocommit=False)
