"""Erasing a person everywhere: a member (by member id) or an anonymous visitor
(``store/face_id``).

:func:`erase` removes them from the API gallery files it is given, writes a tombstone on the
compacted topic that holds them (for a member also on ``member-samples.v1``, which holds the
samples the matchers learned for them), waits (bounded) until every live matcher has
acknowledged it in Redis, then asks the sink to purge their visits, when the sink provides
that. Then it says what the dead-letter topics may still hold (:mod:`.dead_letters`). Asked
to, it last cuts the stream topics (and the dead-letter topics that hold something of anyone)
of what was written before it began and every reader has read (:mod:`.streams`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from facestream.admin.dead_letters import DeadLetterPlace, dead_letters
from facestream.admin.streams import (
    StreamCut,
    cut_streams,
    end_offsets,
    stream_topics,
    subject_partitions,
)
from facestream.runtime import kafka_clients
from facestream.runtime.redis_clients import redis_client
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.runtime.topic_reads import ReadTimeout, topic_exists
from facestream.schemas.keys import partition_for, split_identity_key
from facestream.services.api.galleryfile import erase_identity
from facestream.services.matcher.presence import acknowledgements, live_matchers
from facestream.services.matcher.snapshots import SnapshotStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tombstone:
    """Where the erasure's tombstone landed."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class GalleryErasure:
    """What the erasure did to one API gallery file."""

    path: Path
    samples_removed: int | None
    """Samples of the subject removed from the file; None: the file did not hold them."""

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "samples_removed": self.samples_removed}


@dataclass(frozen=True)
class Erasure:
    """The outcome of :func:`erase`."""

    subject: str
    kind: Literal["member", "visitor"]
    tombstone: Tombstone
    matchers: tuple[str, ...]
    """The matchers alive when the erasure began: the ones that must confirm."""
    acknowledged: tuple[str, ...]
    """Those of :attr:`matchers` that confirmed in time."""
    pending: tuple[str, ...]
    """Those still alive that did not confirm in time."""
    confirmed: bool
    """Every matcher still alive confirmed."""
    visits_purged: int | None
    """Redis keys the sink's purge changed; None when no sink purge is available."""
    galleries: tuple[GalleryErasure, ...] = ()
    """The API gallery files named, each with what was removed from it."""
    dead_letters: tuple[DeadLetterPlace, ...] | None = None
    """What the dead-letter topics still hold of the subject, until their retention deletes
    it unless the erasure cuts it (:attr:`streams`); None when they could not be read in time."""
    streams: tuple[StreamCut, ...] | None = None
    """What the cut of the stream topics did, per topic; None when no cut was asked for or it
    failed (:attr:`cut_error`)."""
    cut_error: str | None = None
    """Why the cut failed (the erasure itself is done; run it again to cut)."""
    snapshots_removed: tuple[Path, ...] = ()
    """Snapshot files of ``identities.v1`` that held the visitor, deleted."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form that ``facestream erase --json`` prints."""
        return {
            "subject": self.subject,
            "kind": self.kind,
            "tombstone": {
                "topic": self.tombstone.topic,
                "partition": self.tombstone.partition,
                "offset": self.tombstone.offset,
            },
            "matchers": list(self.matchers),
            "acknowledged": list(self.acknowledged),
            "pending": list(self.pending),
            "confirmed": self.confirmed,
            "visits_purged": self.visits_purged,
            "galleries": [g.as_dict() for g in self.galleries],
            "dead_letters": (
                None if self.dead_letters is None else [d.as_dict() for d in self.dead_letters]
            ),
            "streams": None if self.streams is None else [c.as_dict() for c in self.streams],
            "cut_error": self.cut_error,
            "snapshots_removed": [str(p) for p in self.snapshots_removed],
        }


def erase(
    subject: str,
    settings: PipelineSettings,
    timeout: float = 30.0,
    galleries: Sequence[Path] = (),
    read_timeout: float = 60.0,
    cut: bool = False,
    snapshots: SnapshotStore | None = None,
) -> Erasure:
    """Erase a member (``subject`` = member id) or a visitor (``store/face_id``) everywhere.

    Removes the subject from each API gallery file in ``galleries`` (first: a wrong file fails
    the erasure before anything else is done), produces the tombstone, waits at most
    ``timeout`` seconds for every matcher that is alive (heartbeat in the last 30 s) to
    acknowledge it, purges the subject's visits in Redis through the sink, then reads the
    dead-letter topics (``read_timeout`` each). ``confirmed`` is true when every such matcher
    acknowledged. With ``cut``, it last deletes from the stream topics' partitions that may
    hold the subject every record written before it began that every reader has read, and from
    each dead-letter topic that holds a payload or names the subject all it held then
    (:func:`~facestream.admin.streams.cut_streams`). Raises
    :class:`~facestream.core.gallery.GalleryError` or :class:`OSError` for a gallery file that
    cannot be read or written, and :class:`~kafka.errors.KafkaError` when, asked to cut, the
    stream topics cannot be described (before anything is changed). With ``snapshots``, the
    snapshot of a visitor's ``identities.v1`` partition is deleted once the tombstone is
    written, if it holds the visitor (a snapshot job racing the erasure writes its file again,
    see :mod:`facestream.services.matcher.snapshot_job`)."""
    topics = settings.topics
    ident = split_identity_key(subject)
    person = subject if ident is None else ident[1]
    # What the stream topics held when the erasure began: a cut goes no further (first, so that
    # a broker that cannot answer stops the erasure before anything is changed).
    marks = _stream_marks(subject, settings) if cut else None
    # The API's galleries hold people under the id they were enrolled with.
    removed = tuple(GalleryErasure(path, erase_identity(path, person)) for path in galleries)
    client = redis_client(settings)
    # Who must confirm: the matchers alive now. One that starts later reads the tombstone
    # (or, once compacted, nothing of the subject) when it builds its state.
    required = live_matchers(client, settings.redis_prefix)
    kind: Literal["member", "visitor"]
    producer = make_producer(settings)
    try:
        if ident is None:
            kind, topic, partition = "member", topics.members, None
        else:
            kind, topic = "visitor", topics.identities
            # The partition the store's FaceIds live in: where its encodings are (murmur2).
            count = len(producer.partitions_for(topics.encodings))
            partition = partition_for(ident[0], count)
        meta = producer.send(topic, key=subject.encode(), value=None, partition=partition).get(
            timeout=30
        )
        if kind == "member":
            # The samples the matchers learned for the member live under the same key in a
            # topic of their own: they go too (a matcher also drops them with the member). A
            # deployment older than that topic has no learned samples to erase.
            if topic_exists(settings, topics.member_samples):
                producer.send(topics.member_samples, key=subject.encode(), value=None).get(
                    timeout=30
                )
            else:
                log.warning("%s does not exist: no learned samples to erase", topics.member_samples)
    finally:
        producer.close(timeout=10)
    log.info("tombstone for %s %s at %s[%d]@%d", kind, subject, topic, meta.partition, meta.offset)
    dropped: tuple[Path, ...] = ()
    if (
        snapshots is not None
        and kind == "visitor"
        and snapshots.holds(topic, meta.partition, subject)
    ):
        snapshots.remove(topic, meta.partition)
        dropped = (snapshots.path(topic, meta.partition),)
        log.info("snapshot %s held %s: deleted", dropped[0], subject)

    deadline = time.monotonic() + timeout
    acked: dict[str, float] = {}
    while True:
        acked = acknowledgements(client, settings.redis_prefix, subject)
        # A matcher that died meanwhile cannot confirm; it holds nothing once it is gone.
        waiting = (required & live_matchers(client, settings.redis_prefix)) - set(acked)
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    dead = _dead_letters(subject, settings, read_timeout)
    cuts, cut_error = None, None
    if marks is not None:
        try:
            cuts = _cut(settings, marks, dead, _time_of(meta))
        except KafkaError as exc:  # permissions, a broker gone: say so, the erasure stands
            cut_error = f"{type(exc).__name__}: {exc}"
            log.error("stream topics not cut: %s", cut_error)
    return Erasure(
        subject=subject,
        kind=kind,
        tombstone=Tombstone(topic, meta.partition, meta.offset),
        matchers=tuple(sorted(required)),
        acknowledged=tuple(sorted(m for m in acked if m in required)),
        pending=tuple(sorted(waiting)),
        confirmed=not waiting,
        visits_purged=_purge_visits(subject, settings),
        galleries=removed,
        dead_letters=dead,
        streams=cuts,
        cut_error=cut_error,
        snapshots_removed=dropped,
    )


def _time_of(meta: Any) -> int:
    """The tombstone's time in ms (the broker's answer, else now: a time must never be read as
    one of Kafka's negative offset sentinels)."""
    at = getattr(meta, "timestamp", -1)
    return int(at) if isinstance(at, int) and at > 0 else int(time.time() * 1000)


def _stream_marks(subject: str, settings: PipelineSettings) -> dict[TopicPartition, int]:
    """End offsets now of the partitions of the stream topics that may hold ``subject``, and
    of every dead-letter topic's partitions."""
    topics = settings.topics
    admin = kafka_clients.admin(settings)
    try:
        streams = subject_partitions(settings, admin, subject, stream_topics(settings))
        dlqs = subject_partitions(
            settings, admin, subject, [topics.dlq(t) for t in stream_topics(settings)]
        )
        return end_offsets(admin, streams + dlqs)
    finally:
        admin.close()


def _cut(
    settings: PipelineSettings,
    marks: dict[TopicPartition, int],
    dead: tuple[DeadLetterPlace, ...] | None,
    erased_at_ms: int,
) -> tuple[StreamCut, ...]:
    """Cut the stream topics, and the dead-letter topics that hold something of anyone (all
    of them when they could not be read), up to ``marks``."""
    holding = None if dead is None else {d.topic for d in dead if d.naming or d.payloads}
    streams = set(stream_topics(settings))
    wanted = {
        tp: o
        for tp, o in marks.items()
        if tp.topic in streams or holding is None or tp.topic in holding
    }
    admin = kafka_clients.admin(settings)
    try:
        return cut_streams(settings, admin, wanted, erased_at_ms)
    finally:
        admin.close()


def _dead_letters(
    subject: str, settings: PipelineSettings, timeout: float
) -> tuple[DeadLetterPlace, ...] | None:
    """What the dead-letter topics hold of the subject; None when they were not read in time
    (the erasure is done all the same: ``facestream audit`` reads them again)."""
    try:
        return dead_letters(subject, settings, timeout)
    except ReadTimeout as exc:
        log.warning("dead-letter topics not read: %s", exc)
        return None


def _purge_visits(subject: str, settings: PipelineSettings) -> int | None:
    """The sink's purge of the subject's visits in Redis (keys changed), None without a sink."""
    try:
        from facestream.services.sink.store import purge
    except ImportError:
        log.warning(
            "facestream.services.sink.store.purge not available: visits of %s not purged", subject
        )
        return None
    ident = split_identity_key(subject)
    if ident is None:
        return purge(subject, settings)
    # The sink keys visitors by FaceId within their store.
    store, face_id = ident
    return purge(face_id, settings, stores=[store])
