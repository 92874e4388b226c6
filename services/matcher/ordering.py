"""A store's faces decided in capture order, whichever detectors its cameras went through.

With frames keyed by camera, a store's cameras are handled by different detectors, and the
order in which their observations reach ``encodings.v1`` depends on the detectors' timing. The
matcher decides each face against what the faces before it minted or taught, so that order
would decide which sighting mints a visitor's FaceId and whether a later one is new or
returning: a run and its replay could disagree. :class:`CaptureOrder` takes the order out of
the detectors' hands:

* each detector publishes, per camera, a :class:`~facestream.schemas.CameraProgress` after
  each commit: no later observation of the camera is captured before ``before``;
* the matcher holds each face of a store whose cameras report progress, ordered by
  (``captured_at``, camera, ``observation_id``), and decides it once every camera's promise is
  past its ``captured_at`` (the store's *watermark*, the least of its cameras' promises).
  The decisions are then the same for any interleaving of the cameras' records.

Two escapes keep a store from waiting for ever, each giving up the order only where it applies:

* a camera whose promise is more than ``max_lag`` (event time) behind the store's most
  advanced camera no longer holds the others (a camera gone dark, a detector far behind);
* a store that has held faces and heard no progress for ``wait_seconds`` (wall time) has them
  all decided (the last customer of the day, a detector restarting).

A face captured before the watermark is decided at once: from a camera that reports no
progress (an edge box, a detector from before progress records, a store keyed by store), or
``late``, from a camera that had promised past it (a camera whose clock went back, a video
replayed on the same camera id). Such faces are counted, never held or dropped.

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
from datetime import datetime, timedelta

from facestream.runtime.runner import KafkaRecord
from facestream.schemas import CameraProgress, FaceObservation
from facestream.services.matcher import metrics


@dataclass(frozen=True, order=True)
class Held:
    """A face waiting for its turn, ordered as it is decided."""

    captured_at: datetime
    camera_id: str
    observation_id: str
    record: KafkaRecord = field(compare=False)
    observation: FaceObservation = field(compare=False)


@dataclass
class _Store:
    partition: int
    promised: dict[str, datetime] = field(default_factory=dict)
    """Each camera's latest promise (``CameraProgress.before``)."""
    held: list[Held] = field(default_factory=list)
    """A heap of the faces not decided yet."""
    heard: float = 0.0
    """When (monotonic seconds) the store's last progress arrived."""

    def copy(self) -> _Store:
        return _Store(self.partition, dict(self.promised), list(self.held), self.heard)

    def watermark(self, max_lag: timedelta) -> datetime | None:
        """The least promise of the cameras within ``max_lag`` of the most advanced one."""
        if not self.promised:
            return None
        newest = max(self.promised.values())
        return min(t for t in self.promised.values() if t >= newest - max_lag)


class CaptureOrder:
    """The faces held per store, and the promises of each store's cameras."""

    def __init__(
        self,
        *,
        wait_seconds: float,
        max_lag: timedelta,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wait_seconds = wait_seconds
        self.max_lag = max_lag
        self.clock = clock
        self._stores: dict[str, _Store] = {}
        self._loaded: set[int] = set()
        """Partitions whose promises were read back since they were assigned."""

    # -- records in, faces out in order ------------------------------------------------------

    def face(self, record: KafkaRecord, obs: FaceObservation) -> list[Held]:
        """A face arrived: the faces now due, in order (this one among them, or not)."""
        face = Held(obs.captured_at, obs.camera_id, obs.observation_id, record, obs)
        store = self._stores.get(obs.store_id)
        mark = store.watermark(self.max_lag) if store is not None else None
        if store is None or mark is None or face.captured_at < mark:
            promised = store.promised.get(obs.camera_id) if store is not None else None
            late = promised is not None and face.captured_at < promised
            metrics.ORDER.labels("late" if late else "direct").inc()
            return [face]
        metrics.ORDER.labels("held").inc()
        heapq.heappush(store.held, face)
        self._gauge()
        return []

    def progress(self, partition: int, progress: CameraProgress) -> list[Held]:
        """A camera's promise: the faces it lets through, in order."""
        return self._release(self._promise(partition, progress))

    def _promise(self, partition: int, progress: CameraProgress) -> _Store:
        store = self._stores.get(progress.store_id)
        if store is None:
            store = self._stores[progress.store_id] = _Store(partition)
        before = store.promised.get(progress.camera_id)
        if before is None or before < progress.before:
            store.promised[progress.camera_id] = progress.before
        store.heard = self.clock()
        return store

    def due(self) -> list[Held]:
        """The faces of stores that heard no progress for ``wait_seconds``, in order."""
        now = self.clock()
        out: list[Held] = []
        for store in self._stores.values():
            if store.held and now - store.heard >= self.wait_seconds:
                escaped = sorted(store.held)
                store.held.clear()
                metrics.ORDER_ESCAPED.inc(len(escaped))
                out += escaped
        if out:
            self._gauge()
        return out

    def _release(self, store: _Store) -> list[Held]:
        mark = store.watermark(self.max_lag)
        out: list[Held] = []
        while store.held and mark is not None and store.held[0].captured_at < mark:
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

    def load(self, partition: int, progress: Iterable[CameraProgress]) -> None:
        """The promises read back from ``partition`` before the first record handled there
        (the committed offset), in their order: as if this matcher had handled them."""
        for one in progress:
            self._promise(partition, one)
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
        self._gauge()

    def held(self) -> Sequence[Held]:
        """Every face held now (for tests and logs), in no particular order."""
        return [face for store in self._stores.values() for face in store.held]

    def _gauge(self) -> None:
        metrics.ORDER_HELD.set(sum(len(store.held) for store in self._stores.values()))
