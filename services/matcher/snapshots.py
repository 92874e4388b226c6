"""Snapshots of ``identities.v1`` partitions: a matcher takes a partition over from the latest
snapshot and the changelog written after it, instead of the whole changelog.

A snapshot holds every store shard of one partition as the changelog left it up to an offset:
the visitors (face id, store, first and last seen, the observations their samples came from) in
the order the galleries hold them, their samples as one float32 block, the tombstones of the
partition the reader remembers (so that a record written after its tombstone is still refused)
and the keys written again after theirs (for the owner to tombstone again). It is written by
``facestream snapshot`` (:mod:`.snapshot_job`), never by a matcher: a matcher's shards hold
visitors it minted before their records were read back, the job's hold exactly the changelog.

One file per partition, ``<dir>/<topic>/<partition>.snap``, replaced atomically (written beside,
synced, renamed). Its last 32 bytes are the SHA-256 of the rest. A snapshot is refused, and the
partition read from its start as before, when it does not check out, was written by another
encoder, for another partition count or another topic, is older than ``max_age`` (tombstones
leave a compacted topic after its ``delete.retention.ms``, 7 days: a tail read from an older
offset could miss one), or its offset is below the partition's first (the records it skipped
are gone). Each refusal is logged and counted; none stops a matcher.

A snapshot is a copy of faces. ``facestream erase`` deletes the snapshot of a visitor's
partition, ``facestream audit`` lists the snapshots that hold a subject, and the job, after
renaming, reads on and writes again if a tombstone of a visitor it holds arrived meanwhile
(docs/privacy.md, "Snapshots").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from facestream.runtime.bulk import gc_paused
from facestream.schemas.keys import identity_key
from facestream.services.matcher import metrics
from facestream.services.matcher.visitors import VisitorState

log = logging.getLogger(__name__)

MAGIC: Final = b"FSSNAP1\n"
FORMAT: Final = 1
DIM: Final = 128
DIGEST: Final = 32
DEFAULT_MAX_AGE: Final = timedelta(hours=24)
"""Snapshots older than this are not used. Far below ``identities.v1``'s
``delete.retention.ms`` (7 days), and the job is meant to run hourly."""


class SnapshotError(ValueError):
    """A snapshot file that cannot be used (``reason`` says why, as counted)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StoreVisitors:
    """One store's visitors in a snapshot, and their samples (one block, in visitor order)."""

    store_id: str
    visitors: list[VisitorState]
    vectors: NDArray[np.float32]


@dataclass(frozen=True)
class Snapshot:
    """The store shards of one partition as the changelog left them before :attr:`offset`."""

    topic: str
    partition: int
    partitions: int
    """The topic's partition count when written (stores hash to partitions by it)."""
    offset: int
    """Every record before this offset is reflected; the tail is read from it."""
    written_at: datetime
    model_version: str
    stores: list[StoreVisitors]
    tombstones: list[tuple[str, int]] = field(default_factory=list)
    """``(key, offset)`` of the partition's tombstones the reader remembered."""
    again: list[str] = field(default_factory=list)
    """Keys written after their tombstone, not tombstoned again yet."""

    @property
    def visitors(self) -> int:
        return sum(len(s.visitors) for s in self.stores)

    @property
    def samples(self) -> int:
        return sum(len(s.vectors) for s in self.stores)

    def holds(self, key: str) -> bool:
        """Whether the snapshot holds the visitor ``store/face_id``."""
        return any(
            identity_key(s.store_id, v.face_id) == key for s in self.stores for v in s.visitors
        )


def path_of(directory: Path, topic: str, partition: int) -> Path:
    return directory / topic / f"{partition}.snap"


def write(directory: Path, snapshot: Snapshot) -> Path:
    """Write ``snapshot`` in place of the partition's previous one (atomically)."""
    path = path_of(directory, snapshot.topic, snapshot.partition)
    # Faces: readable by the user the matchers and the job run as, nobody else.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    header = {
        "format": FORMAT,
        "topic": snapshot.topic,
        "partition": snapshot.partition,
        "partitions": snapshot.partitions,
        "offset": snapshot.offset,
        "written_at": snapshot.written_at.isoformat(),
        "model_version": snapshot.model_version,
        "dim": DIM,
        "stores": [
            {
                "store_id": s.store_id,
                "visitors": [
                    [
                        v.face_id,
                        v.first_seen.isoformat(),
                        v.last_seen.isoformat(),
                        list(v.learned_from),
                    ]
                    for v in s.visitors
                ],
            }
            for s in snapshot.stores
        ],
        "tombstones": [[key, offset] for key, offset in snapshot.tombstones],
        "again": list(snapshot.again),
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    digest = hashlib.sha256()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(descriptor, "wb") as out:
            for chunk in (MAGIC, struct.pack("<Q", len(head)), head):
                out.write(chunk)
                digest.update(chunk)
            for s in snapshot.stores:
                block = np.ascontiguousarray(s.vectors, dtype="<f4").tobytes()
                out.write(block)
                digest.update(block)
            out.write(digest.digest())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    with contextlib.suppress(OSError):  # the rename itself, durable where the OS allows
        directory_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
    return path


def read(path: Path) -> Snapshot:
    """The snapshot in ``path``; raises :class:`SnapshotError` when it does not check out
    and :class:`OSError` when it cannot be read."""
    with gc_paused():
        return _read(path)


def _read(path: Path) -> Snapshot:
    data = path.read_bytes()
    if len(data) < len(MAGIC) + 8 + DIGEST or not data.startswith(MAGIC):
        raise SnapshotError("corrupt", f"{path}: not a facestream snapshot")
    # A view, not a slice: the samples are most of the file and are not copied here.
    body, digest = memoryview(data)[:-DIGEST], data[-DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotError("corrupt", f"{path}: checksum mismatch (truncated or damaged)")
    (length,) = struct.unpack_from("<Q", body, len(MAGIC))
    start = len(MAGIC) + 8
    try:
        header: dict[str, Any] = json.loads(bytes(body[start : start + length]))
        if header.get("format") != FORMAT or header.get("dim") != DIM:
            raise SnapshotError(
                "format", f"{path}: format {header.get('format')}, dim {header.get('dim')}"
            )
        vectors = np.frombuffer(body, dtype="<f4", offset=start + length).reshape(-1, DIM)
        stores, at = [], 0
        for entry in header["stores"]:
            # The header is the job's own JSON, checked by the digest above: read as written.
            parse = datetime.fromisoformat
            visitors = [
                VisitorState(face_id, parse(first), parse(last), tuple(learned))
                for face_id, first, last, learned in entry["visitors"]
            ]
            count = sum(len(v.learned_from) for v in visitors)
            stores.append(StoreVisitors(str(entry["store_id"]), visitors, vectors[at : at + count]))
            at += count
        if at != len(vectors):
            raise SnapshotError("corrupt", f"{path}: {len(vectors)} samples, visitors have {at}")
        if not np.isfinite(vectors).all():
            raise SnapshotError("corrupt", f"{path}: samples that are not finite")
        return Snapshot(
            topic=str(header["topic"]),
            partition=int(header["partition"]),
            partitions=int(header["partitions"]),
            offset=int(header["offset"]),
            written_at=datetime.fromisoformat(header["written_at"]),
            model_version=str(header["model_version"]),
            stores=stores,
            tombstones=[(str(k), int(o)) for k, o in header["tombstones"]],
            again=[str(k) for k in header["again"]],
        )
    except SnapshotError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotError("corrupt", f"{path}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class SnapshotStore:
    """Where a deployment's snapshots are (a volume every matcher mounts), and how old one
    may be to be used."""

    directory: Path
    max_age: timedelta = DEFAULT_MAX_AGE

    def path(self, topic: str, partition: int) -> Path:
        return path_of(self.directory, topic, partition)

    def usable(
        self,
        topic: str,
        partition: int,
        *,
        partitions: int,
        model_version: str,
        first_offset: int,
        now: datetime | None = None,
    ) -> Snapshot | None:
        """The partition's snapshot if one exists and may be used, else None (why is logged
        and counted in ``facestream_matcher_snapshots_total``)."""
        path = self.path(topic, partition)
        if not path.exists():
            metrics.SNAPSHOTS.labels("missing").inc()
            return None
        try:
            snapshot = read(path)
            refusal = _refusal(
                snapshot,
                topic,
                partition,
                partitions,
                model_version,
                first_offset,
                now,
                self.max_age,
            )
            if refusal is not None:
                raise SnapshotError(*refusal)
        except SnapshotError as exc:
            metrics.SNAPSHOTS.labels(exc.reason).inc()
            log.warning("snapshot not used, reading the partition from its start: %s", exc)
            return None
        except OSError as exc:
            metrics.SNAPSHOTS.labels("unreadable").inc()
            log.warning(
                "snapshot %s unreadable, reading the partition from its start: %s", path, exc
            )
            return None
        metrics.SNAPSHOTS.labels("used").inc()
        return snapshot

    def holds(self, topic: str, partition: int, key: str) -> bool:
        """Whether the partition's snapshot holds the visitor ``key`` (one that cannot be
        read counts as holding it: nobody can say it does not)."""
        path = self.path(topic, partition)
        if not path.exists():
            return False
        try:
            return read(path).holds(key)
        except (SnapshotError, OSError):
            return True

    def remove(self, topic: str, partition: int) -> bool:
        """Delete the partition's snapshot; False when there was none."""
        try:
            self.path(topic, partition).unlink()
        except FileNotFoundError:
            return False
        return True


def _refusal(
    snapshot: Snapshot,
    topic: str,
    partition: int,
    partitions: int,
    model_version: str,
    first_offset: int,
    now: datetime | None,
    max_age: timedelta,
) -> tuple[str, str] | None:
    where = f"{topic}[{partition}]"
    age = (now or datetime.now(UTC)) - snapshot.written_at
    checks: Sequence[tuple[bool, str, str]] = (
        (
            snapshot.topic != topic or snapshot.partition != partition,
            "mismatch",
            f"{where}: the file is of {snapshot.topic}[{snapshot.partition}]",
        ),
        (
            snapshot.partitions != partitions,
            "mismatch",
            f"{where}: written for {snapshot.partitions} partitions, the topic has {partitions}",
        ),
        (
            snapshot.model_version != model_version,
            "model_mismatch",
            f"{where}: of {snapshot.model_version}, not {model_version}",
        ),
        (
            age > max_age,
            "stale",
            f"{where}: written {age.total_seconds() / 3600:.1f} h ago, more than "
            f"{max_age.total_seconds() / 3600:.1f} h",
        ),
        (
            snapshot.offset < first_offset,
            "stale",
            f"{where}: offset {snapshot.offset} is below the partition's first, {first_offset}",
        ),
    )
    for failed, reason, message in checks:
        if failed:
            return reason, message
    return None
