"""A person's copies in the stream topics, and cutting them.

``frames.v1``, ``encodings.v1`` and ``matches.v1`` are not compacted: a tombstone does not
reach them, and Kafka cannot delete one record from the middle of a partition. What it can do
is move a partition's start (``DeleteRecords``): every record before an offset is gone at once.
So an erasure can reach these copies only by cutting, in each partition that may hold the
person, everything written before the erasure, of every store sharing that partition. The
pipeline does not need those records once every reader has read them: they are kept only so
that a worker can replay them after a fault, and that replay is what the cut gives up.

:func:`cut_streams` therefore never cuts past what a consumer group has not yet committed
(a lagging group holds its records back, and is named), and on ``matches.v1`` it leaves the
last :data:`MATCHES_GRACE` too: a matcher that takes a partition over reads its recent match
events back to re-emit the decisions of batches it had not committed
(:mod:`facestream.services.matcher.decided`). Dead-letter topics have no consumer group; one is
cut only when it holds a payload or names the subject (:mod:`.dead_letters`).

:func:`held_before` is the audit's side: how many records written before a given time (the
erasure's tombstone) each stream topic still holds in the partitions that may hold the person.

Which partitions may hold a person: for a visitor (``store/face_id``) the store's partition of
the store-keyed topics (``encodings.v1``, ``matches.v1``) and every partition of ``frames.v1``
(a store's frames spread over it when cameras key them); for a member, who can visit any store,
every partition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from kafka.admin import KafkaAdminClient, OffsetSpec
from kafka.errors import GroupIdNotFoundError, KafkaError
from kafka.structs import TopicPartition

from facestream.runtime import kafka_clients
from facestream.runtime.settings import PipelineSettings
from facestream.schemas.keys import partition_for, split_identity_key

log = logging.getLogger(__name__)

MATCHES_GRACE: Final = timedelta(minutes=1)
"""The newest stretch of ``matches.v1`` a cut leaves to retention: a matcher taking over a
partition re-emits the events of its uncommitted batches from there."""

Marks = dict[TopicPartition, int]


@dataclass(frozen=True)
class StreamCut:
    """What a cut did to one topic, over the partitions that may hold the subject."""

    topic: str
    partitions: int
    deleted: int
    """Records deleted (of every store sharing the partitions)."""
    held: int
    """Records written before the erasure that are still there: not yet read by a group, or
    within :data:`MATCHES_GRACE`; retention deletes them."""
    held_by: tuple[str, ...]
    """The consumer groups that had not read them."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partitions": self.partitions,
            "deleted": self.deleted,
            "held": self.held,
            "held_by": list(self.held_by),
        }

    @property
    def detail(self) -> str:
        """One line for people."""
        line = f"{self.deleted} records deleted over {self.partitions} partitions"
        if self.held:
            by = f" (not yet read by {', '.join(self.held_by)})" if self.held_by else ""
            line += f"; {self.held} written before the erasure still held{by}"
        return line


def stream_topics(settings: PipelineSettings) -> tuple[str, ...]:
    """The topics an erasure can only reach by cutting: the pipeline's three streams."""
    t = settings.topics
    return (t.frames, t.encodings, t.matches)


def subject_partitions(
    settings: PipelineSettings, admin: KafkaAdminClient, subject: str, topics: Iterable[str]
) -> list[TopicPartition]:
    """The partitions of ``topics`` that may hold ``subject`` (module docstring)."""
    ident = split_identity_key(subject)
    store_keyed = {settings.topics.encodings, settings.topics.matches}
    out = []
    for topic in topics:
        described = admin.describe_topics([topic])
        parts = sorted(p["partition_index"] for d in described for p in d.get("partitions", []))
        if not parts:
            continue
        if ident is not None and topic in store_keyed:
            parts = [partition_for(ident[0], len(parts))]
        out += [TopicPartition(topic, p) for p in parts]
    return out


def end_offsets(admin: KafkaAdminClient, partitions: Sequence[TopicPartition]) -> Marks:
    """Each partition's end offset now: the first record written after this call."""
    return _offsets(admin, dict.fromkeys(partitions, OffsetSpec.LATEST))


def cut_streams(
    settings: PipelineSettings,
    admin: KafkaAdminClient,
    before: Marks,
    erased_at_ms: int,
) -> tuple[StreamCut, ...]:
    """Delete, in each partition of ``before``, the records before its mark there (the end
    offsets when the erasure began), but none that a consumer group has not committed past, and
    on ``matches.v1`` none written in the :data:`MATCHES_GRACE` before ``erased_at_ms``."""
    if not before:
        return ()
    start = _offsets(admin, dict.fromkeys(before, OffsetSpec.EARLIEST))
    due = dict(before)
    grace_ms = erased_at_ms - int(MATCHES_GRACE.total_seconds() * 1000)
    on_matches = [tp for tp in before if tp.topic == settings.topics.matches]
    if on_matches:
        by_time = _offsets(admin, dict.fromkeys(on_matches, grace_ms))
        for tp in on_matches:
            due[tp] = min(due[tp], by_time[tp])
    committed = _committed(admin, before)
    required = _pipeline_readers(settings)
    target, blockers = {}, {}
    for tp, mark in due.items():
        # A group reads a topic when it is the pipeline's reader of it or has committed on any of
        # its partitions; a reader with no offset on this partition has read none of it.
        readers = required.get(tp.topic, set()) | set(committed.get(tp.topic, {}))
        read = {g: committed.get(tp.topic, {}).get(g, {}).get(tp.partition, -1) for g in readers}
        lagging = (
            {g: max(o, start[tp]) for g, o in read.items() if o < mark} if mark > start[tp] else {}
        )
        target[tp] = min([mark, *lagging.values()])
        blockers[tp] = sorted(lagging)
    to_delete = {tp: o for tp, o in target.items() if o > start[tp]}
    if to_delete:
        admin.delete_records(to_delete, timeout_ms=30_000)
    cuts = []
    for topic in dict.fromkeys(tp.topic for tp in before):
        parts = [tp for tp in before if tp.topic == topic]
        deleted = sum(max(0, target[tp] - start[tp]) for tp in parts)
        # Written before the erasure and still there: up to the mark, from where the start is now.
        held = sum(max(0, before[tp] - max(target[tp], start[tp])) for tp in parts)
        held_by = tuple(sorted({g for tp in parts for g in blockers[tp]}))
        cuts.append(StreamCut(topic, len(parts), deleted, held, held_by))
        log.info("cut %s: %s", topic, cuts[-1].detail)
    return tuple(cuts)


def held_before(
    settings: PipelineSettings, subject: str, since_ms: int
) -> dict[str, tuple[int, int]]:
    """Per stream topic: (records written before ``since_ms`` still held in the partitions that
    may hold ``subject``, partitions looked at)."""
    admin = kafka_clients.admin(settings)
    try:
        parts = subject_partitions(settings, admin, subject, stream_topics(settings))
        start = _offsets(admin, dict.fromkeys(parts, OffsetSpec.EARLIEST))
        upto = _offsets(admin, dict.fromkeys(parts, since_ms))
    finally:
        admin.close()
    out: dict[str, tuple[int, int]] = {}
    for tp in parts:
        held, count = out.get(tp.topic, (0, 0))
        out[tp.topic] = (held + max(0, upto[tp] - start[tp]), count + 1)
    return out


def _offsets(admin: KafkaAdminClient, specs: Mapping[TopicPartition, Any]) -> Marks:
    """Offsets by spec: EARLIEST, LATEST, or a time in ms (the first record at or after it; the
    end offset when there is none)."""
    if not specs:
        return {}
    found = admin.list_partition_offsets(dict(specs))
    out = {}
    latest: list[TopicPartition] = []
    for tp in specs:
        offset = found[tp].offset
        if offset < 0:  # no record at or after the time: everything is before it
            latest.append(tp)
        else:
            out[tp] = offset
    if latest:
        out.update(_offsets(admin, dict.fromkeys(latest, OffsetSpec.LATEST)))
    return out


def _pipeline_readers(settings: PipelineSettings) -> dict[str, set[str]]:
    """The pipeline's own consumer group of each stream topic: they must have read a record
    before it may go, even if they never committed on its partition."""
    t = settings.topics
    return {
        t.frames: {settings.group("detector")},
        t.encodings: {settings.group("matcher")},
        t.matches: {settings.group("sink")},
    }


def _committed(
    admin: KafkaAdminClient, partitions: Iterable[TopicPartition]
) -> dict[str, dict[str, dict[int, int]]]:
    """For each topic of ``partitions``: the consumer groups that committed on any of its
    partitions, with their offset per partition."""
    topics = {tp.topic for tp in partitions}
    groups = [g["group_id"] for g in admin.list_groups()]
    out: dict[str, dict[str, dict[int, int]]] = {}
    for group, offsets in _group_offsets(admin, groups).items():
        for tp, meta in offsets.items():
            if tp.topic in topics and meta.offset >= 0:
                out.setdefault(tp.topic, {}).setdefault(group, {})[tp.partition] = meta.offset
    return out


def _group_offsets(admin: KafkaAdminClient, groups: Sequence[str]) -> dict[str, Any]:
    """Every group's committed offsets: in one request, or group by group when one of them
    fails it (a group deleted meanwhile has none; any other failure is raised: a cut must not
    guess what a reader has read)."""
    if not groups:
        return {}
    try:
        return dict(admin.list_group_offsets(list(groups)))
    except KafkaError:
        pass
    out = {}
    for group in groups:
        try:
            out.update(admin.list_group_offsets([group]))
        except GroupIdNotFoundError:
            continue
    return out
