"""Bounded reads of a topic outside any consumer group (nothing is committed): up to its end
offset of now, with a deadline. The audit and the erasure read whole topics with them; a matcher
reads back the match events it may have to re-emit (:mod:`facestream.services.matcher.decided`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka.structs import TopicPartition

from facestream.runtime import kafka_clients
from facestream.runtime.kafka_clients import KafkaSettings
from facestream.schemas.keys import partition_for

Select = Callable[[int], Sequence[int]]
"""Given a topic's partition count, the partitions to read."""


class ReadTimeout(RuntimeError):
    """A topic could not be read to its end in time: a check says nothing rather than
    something false."""


def of_store(store: str) -> Select:
    """The partition ``store``'s id maps to (murmur2, as the store-keyed topics are
    partitioned)."""
    return lambda count: [partition_for(store, count)]


def topic_exists(settings: KafkaSettings, topic: str) -> bool:
    """Whether the broker has ``topic`` (asked without creating it, and without the minute a
    producer would wait for the metadata of a topic that does not exist)."""
    return topic_partitions(settings, topic) > 0


def topic_partitions(settings: KafkaSettings, topic: str) -> int:
    """How many partitions ``topic`` has (0 when the broker does not have it; asked as
    :func:`topic_exists` says)."""
    consumer = kafka_clients.consumer(settings, enable_auto_commit=False, group_id=None)
    try:
        return len(consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close(autocommit=False)


def read_to_end(
    settings: KafkaSettings,
    topic: str,
    keep: Callable[[Any], bool],
    timeout: float,
    select: Select | None = None,
    *,
    since_ms: int | None = None,
    client_id: str | None = None,
    before: int | None = None,
) -> list[Any]:
    """The records of ``topic`` for which ``keep`` is true, read from the first offset still
    held (with ``since_ms``, the first written at or after that time, in ms since the epoch) to
    the end offset of now (with ``before``, to that offset at most); with ``select``, only from
    the partitions it picks. An absent topic holds nothing. Raises :class:`ReadTimeout` past
    ``timeout`` seconds."""
    options = {"client_id": client_id} if client_id else {}
    consumer = kafka_clients.consumer(settings, enable_auto_commit=False, group_id=None, **options)
    try:
        found = consumer.partitions_for_topic(topic)
        if not found:
            return []
        partitions = sorted(found) if select is None else select(len(found))
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        if before is not None:
            ends = {tp: min(end, before) for tp, end in ends.items()}
        if since_ms is None:
            consumer.seek_to_beginning(*tps)
        else:
            starts = consumer.offsets_for_times({tp: since_ms for tp in tps})
            for tp in tps:
                at = starts.get(tp)
                consumer.seek(tp, at.offset if at is not None else ends[tp])
        deadline = time.monotonic() + timeout
        out: list[Any] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise ReadTimeout(f"{topic} not read to its end in {timeout:.0f} s")
            for batch in consumer.poll(timeout_ms=500, max_records=1000).values():
                out += [
                    r
                    for r in batch
                    if r.offset < ends[TopicPartition(r.topic, r.partition)] and keep(r)
                ]
        return out
    finally:
        consumer.close(autocommit=False)
