"""Bounded reads of a topic for the audit and the erasure: from its first offset to its end
offset of now, with a deadline, outside any consumer group (nothing is committed)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka.structs import TopicPartition

from facestream.runtime import kafka_clients
from facestream.runtime.settings import PipelineSettings
from facestream.schemas.keys import partition_for


class ReadTimeout(RuntimeError):
    """A topic could not be read to its end in time: a check says nothing rather than
    something false."""


def topic_exists(settings: PipelineSettings, topic: str) -> bool:
    """Whether the broker has ``topic`` (asked without creating it, and without the minute a
    producer would wait for the metadata of a topic that does not exist)."""
    consumer = kafka_clients.consumer(settings, enable_auto_commit=False, group_id=None)
    try:
        return bool(consumer.partitions_for_topic(topic))
    finally:
        consumer.close(autocommit=False)


def read_to_end(
    settings: PipelineSettings,
    topic: str,
    keep: Callable[[Any], bool],
    timeout: float,
    store: str | None = None,
) -> list[Any]:
    """The records of ``topic`` for which ``keep`` is true, read from the first offset still
    held to the end offset of now; with ``store``, only from the partition the store's id maps
    to (murmur2, as the store-keyed topics are partitioned). An absent topic holds nothing.
    Raises :class:`ReadTimeout` past ``timeout`` seconds."""
    consumer = kafka_clients.consumer(settings, enable_auto_commit=False, group_id=None)
    try:
        found = consumer.partitions_for_topic(topic)
        if not found:
            return []
        partitions = sorted(found)
        if store is not None:
            partitions = [partition_for(store, len(partitions))]
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        out: list[Any] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise ReadTimeout(f"{topic} not read to its end in {timeout:.0f} s")
            for batch in consumer.poll(timeout_ms=500, max_records=1000).values():
                out += [r for r in batch if keep(r)]
        return out
    finally:
        consumer.close(autocommit=False)
