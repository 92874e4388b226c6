"""A store's faces decided in capture order, whichever detectors its cameras went through.

With frames keyed by camera, a store's cameras are handled by different detectors, and the
order in which their observations reach ``encodings.v1`` depends on the detectors' timing. The
matcher decides each face against what the faces before it minted or taught, so that order
would decide which sighting mints a visitor's FaceId and whether a later one is new or
returning: a run and its replay could disagree. :class:`CaptureOrder` takes the order out of
the detectors' hands:

* each detector publishes, per camera, a :class:`~facestream.schemas.CameraProgress` after
  each commit: no later observation of the camera ends before ``before``;
* the matcher holds each face of a store whose cameras report progress, ordered by when its
  sighting ended (``FaceObservation.ends_at``: a still's ``captured_at``, a video pass's
  ``last_seen``), camera and ``observation_id``, and decides it once every camera's promise is
  past that time (the store's *watermark*, the least of its cameras' promises). The decisions
  are then the same for any interleaving of the cameras' records. A pass is ordered by its
  end, not its start, because it is published when it ends: ordered by its start, it would
  wait for every pass of the store begun before it to end (up to the detector's
  ``PASS_MAX_OPEN_SECONDS`` plus its gap, 11 s), where by its end it waits at most the gap.

One escape keeps a store from waiting for ever: a camera that has reported no progress for
``wait_seconds`` no longer holds the others, until it reports again (a camera gone dark, a
detector down; the last faces of a replay, when the store's other cameras have no frames
left). The time is the partition's own: the Kafka timestamps of its records (when the
detectors wrote them), and the wall clock only once the matcher has read everything, so a
matcher that falls behind (Redis away, a restart) does not take cameras for silent when their
progress is in its backlog. A camera that reports progress, however far behind, holds the
others: a detector working through a backlog keeps its cameras' faces in order with the
others', and hands its partitions' frames over in timestamp order
(:mod:`facestream.runtime.timeorder`), so a camera of its own does not fall silent behind
another's backlog. The order is given up only for a camera silent that long, and only when its
next face ended before faces already decided: a detector restarting for longer than
``wait_seconds``, or a camera whose partition no detector owned for that long
(docs/pipeline.md, "Capture order").

A store first heard of through a camera's progress (a detector greets each camera it starts
following before its first face) holds its faces for its first ``wait_seconds``, promises or
not: its other cameras are not known until their detectors report, and its first faces may
come from any of them, in any order (a store's first records, or the first after it was quiet
for longer than the read-back reaches, :data:`~.worker.PROGRESS_LOOKBACK`). A store first
heard of through a face has no camera that reports progress: its faces go as they come.

A face that ended before the watermark is decided at once: from a camera that reports no
progress (an edge box or a detector from before progress records) or is silent, or ``late``, from
a camera that had promised past it (a camera whose clock went back, a video replayed on the
same camera id). Such faces are counted, never held or dropped.

The held faces' records are not committed (:meth:`held_offsets`; the runner commits no further
than the first), so a crash reads them again; the cameras' promises are read back from the
partition on its first record after an assignment (:meth:`needs_load`, :meth:`load`), so that a
restarted matcher holds the same faces the crashed one would have.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from facestream.runtime.runner import KafkaRecord
from facestream.schemas import CameraProgress, FaceObservation
from facestream.services.matcher import metrics


@dataclass(frozen=True, order=True)
class Held:
    """A face waiting for its turn, ordered as it is decided."""

    ends_at: datetime
    """When the sighting ended (``FaceObservation.ends_at``: a pass's last sighting)."""
    camera_id: str
    observation_id: str
    record: KafkaRecord = field(compare=False)
    observation: FaceObservation = field(compare=False)


@dataclass
class _Store:
    partition: int
    first: int | None
    """The Kafka timestamp (ms) of the store's first record, when that was a camera's
    progress: it holds its faces for ``wait_seconds`` from then, promises or not
    (:meth:`CaptureOrder._release`). None: first heard of through a face."""
    promised: dict[str, tuple[datetime, int]] = field(default_factory=dict)
    """Each camera's latest promise (``CameraProgress.before``), and the Kafka timestamp (ms)
    of its latest progress record."""
    held: list[Held] = field(default_factory=list)
    """A heap of the faces not decided yet."""

    def copy(self) -> _Store:
        return _Store(self.partition, self.first, dict(self.promised), list(self.held))

    def watermark(self, since: int) -> datetime | None:
        """The least promise of the cameras that reported progress at ``since`` or later
        (None: none did)."""
        return min((t for t, heard in self.promised.values() if heard >= since), default=None)


class CaptureOrder:
    """The faces held per store, and the promises of each store's cameras."""

    def __init__(self, *, wait_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.wait_ms = int(wait_seconds * 1000)
        self.clock = clock
        """The wall clock (epoch seconds), used once everything is read (:meth:`due`)."""
        self._stream: dict[int, int] = {}
        """Per partition, the latest Kafka timestamp (ms) of a record read there."""
        self._stores: dict[str, _Store] = {}
        self._loaded: set[int] = set()
        """Partitions whose promises were read back since they were assigned."""

    # -- records in, faces out in order ------------------------------------------------------

    def face(self, record: KafkaRecord, obs: FaceObservation) -> list[Held]:
        """A face arrived: the faces now due, in order (this one among them, or not)."""
        face = Held(obs.ends_at, obs.camera_id, obs.observation_id, record, obs)
        self._read(record)
        store = self._store(obs.store_id, record.partition, None)
        since = self._since(store)
        mark = store.watermark(since)
        if not self._new(store, since) and (mark is None or face.ends_at < mark):
            promised = store.promised.get(obs.camera_id)
            late = promised is not None and face.ends_at < promised[0]
            metrics.ORDER.labels("late" if late else "direct").inc()
            return [face]
        metrics.ORDER.labels("held").inc()
        heapq.heappush(store.held, face)
        self._gauge()
        return []

    def progress(self, record: KafkaRecord, progress: CameraProgress) -> list[Held]:
        """A camera's promise (the record that carried it): the faces it lets through, in
        order."""
        self._read(record)
        return self._release(self._promise(record.partition, progress, record.timestamp))

    def _read(self, record: KafkaRecord) -> None:
        self._advance(record.partition, record.timestamp)

    def _advance(self, partition: int, at: int) -> None:
        """The partition's time moves on to ``at`` (ms), never back."""
        self._stream[partition] = max(self._stream.get(partition, 0), at)

    def _store(self, store_id: str, partition: int, at: int | None) -> _Store:
        store = self._stores.get(store_id)
        if store is None:
            store = self._stores[store_id] = _Store(partition, at)
        return store

    def _new(self, store: _Store, since: int) -> bool:
        """Whether the store was first heard of, through a camera's progress, less than
        ``wait_seconds`` ago."""
        return store.first is not None and store.first > since

    def _promise(self, partition: int, progress: CameraProgress, at: int) -> _Store:
        store = self._store(progress.store_id, partition, at)
        before = store.promised.get(progress.camera_id)
        if before is not None:
            at = max(at, before[1])
            latest = max(before[0], progress.before)
        else:
            latest = progress.before
        store.promised[progress.camera_id] = (latest, at)
        return store

    def due(self, idle: bool) -> list[Held]:
        """The faces no longer held by cameras that went silent for ``wait_seconds``, in
        order. ``idle``: the matcher's last poll found nothing, so it has read everything
        and the wall clock is the partition's time too."""
        out: list[Held] = []
        for store in self._stores.values():
            if store.held:
                escaped = self._release(store, idle)
                metrics.ORDER_ESCAPED.inc(len(escaped))
                out += escaped
        return out

    def _since(self, store: _Store, idle: bool = False) -> int:
        """Cameras of ``store`` that last reported progress before this (ms) are silent."""
        now = self._stream.get(store.partition, 0)
        if idle:
            now = max(now, int(self.clock() * 1000))
        return now - self.wait_ms

    def _release(self, store: _Store, idle: bool = False) -> list[Held]:
        """The faces before the least promise of the store's cameras not silent (every face,
        when all are); none while the store is new."""
        since = self._since(store, idle)
        if self._new(store, since):
            return []
        mark = store.watermark(since)
        out: list[Held] = []
        while store.held and (mark is None or store.held[0].ends_at < mark):
            out.append(heapq.heappop(store.held))
        if out:
            self._gauge()
        return out

    # -- what the runner and a restart need --------------------------------------------------

    def held_offsets(self) -> dict[int, int]:
        """Per partition, the offset of the first face held (the runner commits no further)."""
        first: dict[int, int] = {}
        for store in self._stores.values():
            for face in store.held:
                offset = face.record.offset
                if offset < first.get(store.partition, offset + 1):
                    first[store.partition] = offset
        return first

    def needs_load(self, partition: int) -> bool:
        """Whether the promises made on ``partition`` before its committed offset are still to
        be read back (its first record since it was assigned)."""
        return partition not in self._loaded

    def load(self, partition: int, progress: Iterable[tuple[CameraProgress, int]]) -> None:
        """The promises read back from ``partition`` before the first record handled there
        (the committed offset), with their records' timestamps, in their order: as if this
        matcher had handled them."""
        for one, at in progress:
            self._promise(partition, one, at)
            self._advance(partition, at)
        self._loaded.add(partition)

    def snapshot(self) -> dict[str, _Store]:
        """The state to go back to when a batch is handled again (:meth:`restore`)."""
        return {store_id: store.copy() for store_id, store in self._stores.items()}

    def restore(self, saved: dict[str, _Store]) -> None:
        self._stores = {store_id: store.copy() for store_id, store in saved.items()}
        self._gauge()

    def forget(self, partitions: Iterable[int], saved: dict[str, _Store] | None = None) -> None:
        """Partitions no longer ours: their faces and promises go (the next owner reads the
        held faces again from the last commit, and the promises back). ``saved``, a
        :meth:`snapshot`, forgets them too."""
        gone = set(partitions)
        for stores in (self._stores, saved if saved is not None else {}):
            for store_id in [s for s, store in stores.items() if store.partition in gone]:
                del stores[store_id]
        self._loaded -= gone
        for partition in gone:
            self._stream.pop(partition, None)
        self._gauge()

    def held(self) -> Sequence[Held]:
        """Every face held now (for tests and logs), in no particular order."""
        return [face for store in self._stores.values() for face in store.held]

    def _gauge(self) -> None:
        metrics.ORDER_HELD.set(sum(len(store.held) for store in self._stores.values()))
