"""``facestream snapshot``: write the snapshot of each ``identities.v1`` partition
(:mod:`.snapshots`), for matchers to take partitions over from.

One partition at a time (memory holds one partition's shards, not the topic's): the partition is
read the way a matcher takes it over (from its previous snapshot and the tail after it, through
:class:`~.shards.VisitorShards`, so the file holds exactly what a take-over from the changelog
would), written, and read on to the changelog's end. A tombstone of a visitor the new file holds
that arrived meanwhile (an erasure racing the job, which may have deleted the previous file
before this one was renamed into place) means the file is written again, at most
:data:`ATTEMPTS` times, then deleted: an erasure is never undone by a snapshot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from facestream.core.engine import MODEL_VERSION
from facestream.core.gallery import GalleryConfig
from facestream.runtime.settings import PipelineSettings
from facestream.schemas.keys import identity_key
from facestream.services.matcher import snapshots
from facestream.services.matcher.changelog import ChangelogReader
from facestream.services.matcher.shards import VisitorShards
from facestream.services.matcher.snapshots import Snapshot, SnapshotStore

log = logging.getLogger(__name__)

ATTEMPTS: Final = 3


@dataclass(frozen=True)
class Written:
    """What :func:`write_snapshots` did for one partition."""

    partition: int
    path: Path | None
    """None: deleted after :data:`ATTEMPTS` races with erasures (the next run writes it)."""
    offset: int
    visitors: int
    samples: int
    previous: bool
    """Whether the partition was read from a previous snapshot (else from its start)."""
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "path": None if self.path is None else str(self.path),
            "offset": self.offset,
            "visitors": self.visitors,
            "samples": self.samples,
            "previous": self.previous,
            "seconds": round(self.seconds, 3),
        }


def write_snapshots(
    pipeline: PipelineSettings,
    store: SnapshotStore,
    partitions: Sequence[int] | None = None,
    timeout: float = 600.0,
    model_version: str = MODEL_VERSION,
) -> list[Written]:
    """Write the snapshot of each of ``partitions`` (all of the topic's when None); raises
    :class:`~.changelog.ChangelogError` when a partition cannot be read to its end within
    ``timeout`` seconds."""
    topic = pipeline.topics.identities
    done = []
    probe = ChangelogReader(pipeline, topic, lambda _record: None, client_id=_client("probe"))
    try:
        every = probe.partitions(timeout)
    finally:
        probe.close()
    for partition in every if partitions is None else sorted(set(partitions)):
        if partition not in every:
            raise ValueError(f"{topic} has no partition {partition} (it has {len(every)})")
        done.append(_write_one(pipeline, store, partition, timeout, model_version))
    return done


def _shards(
    pipeline: PipelineSettings, store: SnapshotStore, model_version: str, name: str
) -> VisitorShards:
    return VisitorShards(
        kafka=pipeline,
        topic=pipeline.topics.identities,
        # The job only holds the samples: an exact index, never a compressed build.
        config=GalleryConfig(index="flat"),
        neighbours={},
        on_erased=lambda _key: None,
        client_id=_client(name),
        model_version=model_version,
        snapshots=store,
    )


def _client(name: str) -> str:
    return f"facestream-snapshot-{name}"


def _write_one(
    pipeline: PipelineSettings,
    store: SnapshotStore,
    partition: int,
    timeout: float,
    model_version: str,
) -> Written:
    started = time.perf_counter()
    topic = pipeline.topics.identities
    shards = _shards(pipeline, store, model_version, str(partition))
    try:
        shards.start(timeout)
        shards.own([partition], timeout)
        previous = shards.from_snapshot(partition)
        for _attempt in range(ATTEMPTS):
            snapshot = shards.snapshot(partition)
            path = snapshots.write(store.directory, snapshot)
            shards.catch_up(timeout)
            raced = _erased_since(shards, snapshot)
            if not raced:
                log.info(
                    "%s[%d]: snapshot of %d visitors (%d samples) at offset %d: %s",
                    topic,
                    partition,
                    snapshot.visitors,
                    snapshot.samples,
                    snapshot.offset,
                    path,
                )
                return Written(
                    partition,
                    path,
                    snapshot.offset,
                    snapshot.visitors,
                    snapshot.samples,
                    previous,
                    time.perf_counter() - started,
                )
            log.warning(
                "%s[%d]: %d visitors of the snapshot just written were erased meanwhile; "
                "writing it again",
                topic,
                partition,
                len(raced),
            )
        store.remove(topic, partition)
        log.error("%s[%d]: snapshot deleted, erasures kept racing it", topic, partition)
        return Written(partition, None, -1, 0, 0, previous, time.perf_counter() - started)
    finally:
        shards.close()


def _erased_since(shards: VisitorShards, snapshot: Snapshot) -> list[str]:
    """Keys the snapshot holds whose tombstone came at or after its offset."""
    late = {
        key for key, offset in shards.tombstones(snapshot.partition) if offset >= snapshot.offset
    }
    if not late:
        return []
    return [
        identity_key(s.store_id, v.face_id)
        for s in snapshot.stores
        for v in s.visitors
        if identity_key(s.store_id, v.face_id) in late
    ]
