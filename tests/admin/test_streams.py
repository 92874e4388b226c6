"""Cutting the stream topics for an erasure, on the real broker: what is deleted is exactly what
was written before the erasure and read by every reader; a lagging or absent reader holds its
records back and is named; the last minute of ``matches.v1`` stays; records written after the
erasure began, and the partitions of other stores, are untouched. The audit counts what is
left."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, OffsetSpec
from kafka.structs import OffsetAndMetadata, TopicPartition

from facestream.admin.streams import (
    MATCHES_GRACE,
    cut_streams,
    end_offsets,
    held_before,
    stream_topics,
    subject_partitions,
)
from facestream.runtime import kafka_clients
from facestream.runtime.settings import PipelineSettings
from facestream.schemas.keys import partition_for
from tests.kafka_fixtures import PARTITIONS

STORE, OTHER = "s1", "s4"
SUBJECT = f"{STORE}/F-1"


@pytest.fixture
def admin(pipeline: PipelineSettings) -> Iterator[KafkaAdminClient]:
    client = kafka_clients.admin(pipeline)
    yield client
    client.close()


def send(settings: PipelineSettings, topic: str, partition: int, n: int, age_s: float = 0) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    stamp = int((time.time() - age_s) * 1000)
    try:
        for f in [
            producer.send(topic, b"x", key=b"k", partition=partition, timestamp_ms=stamp)
            for _ in range(n)
        ]:
            f.get(timeout=20)
    finally:
        producer.close(timeout=10)


def commit(settings: PipelineSettings, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = kafka_clients.consumer(settings, group_id=group, enable_auto_commit=False)
    try:
        consumer.assign(list(offsets))
        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
    finally:
        consumer.close(autocommit=False)


def starts(admin: KafkaAdminClient, parts: list[TopicPartition]) -> dict[TopicPartition, int]:
    found = admin.list_partition_offsets(dict.fromkeys(parts, OffsetSpec.EARLIEST))
    return {tp: found[tp].offset for tp in parts}


@pytest.mark.timeout(120)
def test_a_cut_deletes_what_every_reader_has_read_and_nothing_else(
    pipeline: PipelineSettings, admin: KafkaAdminClient
) -> None:
    t = pipeline.topics
    mine, other = partition_for(STORE, PARTITIONS), partition_for(OTHER, PARTITIONS)
    assert mine != other
    frames = [TopicPartition(t.frames, p) for p in range(PARTITIONS)]
    enc, enc_other = TopicPartition(t.encodings, mine), TopicPartition(t.encodings, other)
    matches = TopicPartition(t.matches, mine)
    for tp in frames:
        send(pipeline, t.frames, tp.partition, 3)
    send(pipeline, t.encodings, mine, 5)
    send(pipeline, t.encodings, other, 5)
    # Match events: 4 old enough to go, 2 within the grace.
    send(pipeline, t.matches, mine, 4, age_s=MATCHES_GRACE.total_seconds() + 120)
    send(pipeline, t.matches, mine, 2)
    # The detectors read all their frames but partition 3's last; the matchers 3 of the
    # store's 5 encodings; the sink all its match events, a CRM group 5 of them.
    commit(pipeline, pipeline.group("detector"), {tp: 3 for tp in frames[:3]} | {frames[3]: 2})
    commit(pipeline, pipeline.group("matcher"), {enc: 3, enc_other: 5})
    commit(pipeline, pipeline.group("sink"), {matches: 6})
    commit(pipeline, f"{pipeline.group_prefix}-crm", {matches: 5})

    parts = subject_partitions(pipeline, admin, SUBJECT, stream_topics(pipeline))
    # A visitor: every frames partition, the store's partition of the store-keyed topics.
    assert sorted(parts) == sorted([*frames, enc, matches])
    marks = end_offsets(admin, parts)
    # Written after the erasure began: never cut, whoever has read it.
    send(pipeline, t.encodings, mine, 2)
    erased_at = int(time.time() * 1000)
    # Before the cut the audit counts everything from before the erasure.
    assert held_before(pipeline, SUBJECT, erased_at) == {
        t.frames: (12, PARTITIONS),
        t.encodings: (7, 1),
        t.matches: (6, 1),
    }

    cuts = {c.topic: c for c in cut_streams(pipeline, admin, marks, erased_at)}

    assert starts(admin, [*frames, enc, enc_other, matches]) == {
        **{tp: 3 for tp in frames[:3]},
        frames[3]: 2,
        enc: 3,
        enc_other: 0,
        matches: 4,
    }
    f, e, m = cuts[t.frames], cuts[t.encodings], cuts[t.matches]
    assert (f.partitions, f.deleted, f.held, f.held_by) == (
        PARTITIONS,
        11,
        1,
        (pipeline.group("detector"),),
    )
    assert (e.deleted, e.held, e.held_by) == (3, 2, (pipeline.group("matcher"),))
    # The CRM group's offset (5) is past the grace's (4): the grace decides, nobody lags.
    assert (m.deleted, m.held, m.held_by) == (4, 2, ())
    assert held_before(pipeline, SUBJECT, erased_at) == {
        t.frames: (1, PARTITIONS),
        t.encodings: (4, 1),
        t.matches: (2, 1),
    }
    # A second cut after the readers caught up takes the rest (bar the grace and what came
    # after the erasure began).
    commit(pipeline, pipeline.group("detector"), {frames[3]: 3})
    commit(pipeline, pipeline.group("matcher"), {enc: 7})
    again = {c.topic: c for c in cut_streams(pipeline, admin, marks, erased_at)}
    assert (again[t.frames].deleted, again[t.frames].held) == (1, 0)
    assert (again[t.encodings].deleted, again[t.encodings].held) == (2, 0)
    assert starts(admin, [enc])[enc] == 5


@pytest.mark.timeout(120)
def test_a_reader_that_never_committed_on_a_partition_holds_all_of_it(
    pipeline: PipelineSettings, admin: KafkaAdminClient
) -> None:
    """The pipeline's reader of a topic counts even with no offset at all (a detector that has
    not started yet), and a group that committed on one partition of a topic counts on all."""
    t = pipeline.topics
    frames = [TopicPartition(t.frames, p) for p in range(PARTITIONS)]
    for tp in frames:
        send(pipeline, t.frames, tp.partition, 2)
    parts = subject_partitions(pipeline, admin, "M-1", [t.frames, t.encodings])
    assert len(parts) == 2 * PARTITIONS  # a member: every partition
    marks = end_offsets(admin, parts)
    (cut, _) = cut_streams(pipeline, admin, marks, int(time.time() * 1000))
    assert (cut.deleted, cut.held, cut.held_by) == (0, 8, (pipeline.group("detector"),))
    commit(pipeline, pipeline.group("detector"), {tp: 2 for tp in frames})
    commit(pipeline, f"{pipeline.group_prefix}-archive", {frames[0]: 2})
    (cut, _) = cut_streams(pipeline, admin, marks, int(time.time() * 1000))
    assert (cut.deleted, cut.held, cut.held_by) == (2, 6, (f"{pipeline.group_prefix}-archive",))
