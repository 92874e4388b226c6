"""One store's visitors: their gallery, and where each of their samples came from.

A visitor is minted from one observation and may later learn samples from confident sightings
(see :mod:`.learning`). What a shard keeps per visitor is exactly what its ``identities.v1``
record says: the samples in order, the observation each came from, and when the visitor was
first and last seen, so that the record can be written again at any time, byte for byte.

Retention: a visitor's ``last_seen`` moves only when a record says so (minted, learned, or a
sighting at least :data:`LAST_SEEN_STEP` after the recorded one, which re-writes the record),
never in memory alone; so a shard rebuilt from the changelog retires exactly the visitors the
live one would have. The shard's clock is the latest event time it has seen (observations of the
store and ``last_seen`` of its records), and only moves forward.

Bulk loading: a shard rebuilt from the changelog stages its records (:meth:`~StoreShard.stage`)
and adds their samples to the gallery in one :meth:`~StoreShard.settle`. One gallery add per record
would update the index once per record, and a visitor replaced by a later record (it learned)
would be removed from the gallery, a pass over every sample held; staged, it is replaced before
it reaches the gallery. The gallery ends as the record-by-record path leaves it: the same
visitors with the same samples, added in the order of their last records.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from facestream.core.engine import MODEL_VERSION
from facestream.core.gallery import Gallery, GalleryConfig, Identity
from facestream.runtime.bulk import gc_paused
from facestream.schemas import IdentityRecord, vector_to_wire

LAST_SEEN_STEP: Final = timedelta(days=1)
"""How far a sighting must be past the recorded ``last_seen`` to re-write the record: the
changelog then carries at most one such record per visitor and day (daily unique visitors),
and ``last_seen`` lags the last sighting by less than this."""


@dataclass(frozen=True)
class SampleSource:
    """The visitor sample an observation gave: ``index`` 0 minted the visitor, others were
    learned."""

    face_id: str
    index: int


@dataclass
class _Visitor:
    first_seen: datetime
    last_seen: datetime
    learned_from: list[str]
    """Observation ids of the samples, in the record's order (the minting one first)."""
    prints: list[bytes] = field(default_factory=list)
    """A digest of each sample: the gallery does not promise to return samples in the order
    they were added, and the record must list them in that order."""


@dataclass(frozen=True)
class VisitorState:
    """What a shard keeps of a visitor besides its samples (a snapshot's row)."""

    face_id: str
    first_seen: datetime
    last_seen: datetime
    learned_from: tuple[str, ...]
    """Observation ids of the samples, in order: as many as the visitor has samples."""


def _print(vector: NDArray[Any]) -> bytes:
    """A digest of one sample (see :attr:`_Visitor.prints`)."""
    (found,) = _prints(np.asarray(vector)[None, :])
    return found


def _prints(vectors: NDArray[Any]) -> list[bytes]:
    """The digest of each row of an (n, 128) block, from one copy of it (in a bulk load a
    numpy conversion per row costs more than the hash)."""
    rows = np.ascontiguousarray(vectors, dtype="<f4")
    raw = memoryview(rows.tobytes())
    step = 4 * rows.shape[1]
    return [
        hashlib.blake2b(raw[i : i + step], digest_size=8).digest() for i in range(0, len(raw), step)
    ]


class StoreShard:
    """The visitors of one store, in a gallery of their own (no Kafka here)."""

    def __init__(
        self,
        config: GalleryConfig,
        store_id: str,
        partition: int,
        model_version: str = MODEL_VERSION,
    ) -> None:
        if config.metric != "l2":
            # Records are rebuilt from the gallery's samples: they must come back unchanged.
            raise ValueError("visitor shards keep raw encodings: the metric must be l2")
        self.gallery = Gallery(config)
        self.store_id = store_id
        self.partition = partition
        self.model_version = model_version
        """The encoder of the samples, written into every record."""
        self.samples = 0
        """Samples held, over every visitor of the store."""
        self._visitors: dict[str, _Visitor] = {}
        self._source: dict[str, SampleSource] = {}
        self._staged: dict[str, NDArray[np.float32]] = {}
        """Samples of visitors staged but not yet in the gallery (see :meth:`settle`), in the
        order their records were staged."""
        self.clock: datetime | None = None
        """The latest event time seen of the store (see :meth:`expired`)."""
        self._by_seen: list[tuple[datetime, str]] = []
        """A heap of (last_seen, face id), oldest first; entries that no longer match the
        visitor (seen since, or gone) are dropped when they come to the top."""

    def __len__(self) -> int:
        return len(self._visitors)

    def __contains__(self, face_id: object) -> bool:
        return face_id in self._visitors

    def source_of(self, observation_id: str) -> SampleSource | None:
        """The sample ``observation_id`` gave a visitor here, if any."""
        return self._source.get(observation_id)

    def sample_count(self, face_id: str) -> int:
        """How many samples the visitor has (0 when unknown)."""
        visitor = self._visitors.get(face_id)
        return len(visitor.learned_from) if visitor else 0

    def apply(self, record: IdentityRecord) -> bool:
        """Make the visitor what ``record`` says, unless every sample of it is held already
        (this matcher's own record read back, or an older record of the visitor). Returns
        whether anything changed."""
        changed = self.stage(record)
        self.settle()
        return changed

    def stage(self, record: IdentityRecord) -> bool:
        """:meth:`apply`, except that the samples reach the gallery only at the next
        :meth:`settle` (until then nothing may search the shard or read its samples)."""
        held = self._visitors.get(record.face_id)
        if held is not None and set(record.learned_from) <= set(held.learned_from):
            # The same samples, perhaps seen later (a record re-written for last_seen).
            self._seen_at(record.face_id, held, record.seen)
            return False
        if held is not None:
            self.remove(record.face_id)
        vectors = record.vectors
        self._staged[record.face_id] = vectors
        self._visitors[record.face_id] = _Visitor(
            record.first_seen, record.seen, list(record.learned_from), [_print(v) for v in vectors]
        )
        heapq.heappush(self._by_seen, (record.seen, record.face_id))
        self.tick(record.seen)
        for index, observation_id in enumerate(record.learned_from):
            self._source[observation_id] = SampleSource(record.face_id, index)
        self.samples += len(vectors)
        return True

    def settle(self) -> None:
        """Add every staged visitor's samples to the gallery, in one ``add_many``."""
        if self._staged:
            staged, self._staged = self._staged, {}
            self.gallery.add_many((self._identity(f), v) for f, v in staged.items())

    def export(self) -> tuple[list[VisitorState], NDArray[np.float32]]:
        """Every visitor, in the order the gallery holds them, and their samples, each
        visitor's in its record's order, one block after another (nothing may be staged)."""
        if self._staged:
            raise RuntimeError("a shard with staged samples cannot be exported")
        with gc_paused():
            owners, vectors = self.gallery.export()
            prints = _prints(vectors)
            rows: dict[str, list[int]] = {}
            for row, owner in enumerate(owners):
                rows.setdefault(owner, []).append(row)
            order: list[int] = []
            states: list[VisitorState] = []
            for face_id, visitor in self._visitors.items():
                held = {prints[row]: row for row in rows[face_id]}
                order += [held[p] for p in visitor.prints]
                states.append(
                    VisitorState(
                        face_id, visitor.first_seen, visitor.last_seen, tuple(visitor.learned_from)
                    )
                )
            del prints, rows
        return states, vectors[np.asarray(order, dtype=np.intp)].reshape(-1, vectors.shape[1])

    def load(self, states: Iterable[VisitorState], vectors: NDArray[np.float32]) -> None:
        """Hold exactly these visitors (what :meth:`export` gave), in one ``add_many``: an
        empty shard only."""
        if self._visitors:
            raise RuntimeError("only an empty shard can be loaded")
        with gc_paused():
            self._load(states, vectors)

    def _load(self, states: Iterable[VisitorState], vectors: NDArray[np.float32]) -> None:
        identities: list[Identity] = []
        counts: list[int] = []
        prints = _prints(vectors)
        start = 0
        for state in states:
            count = len(state.learned_from)
            self._visitors[state.face_id] = _Visitor(
                state.first_seen,
                state.last_seen,
                list(state.learned_from),
                prints[start : start + count],
            )
            start += count
            for index, observation_id in enumerate(state.learned_from):
                self._source[observation_id] = SampleSource(state.face_id, index)
            self._by_seen.append((state.last_seen, state.face_id))
            self.tick(state.last_seen)
            identities.append(self._identity(state.face_id))
            counts.append(count)
        if start != len(vectors):
            raise ValueError(f"{len(vectors)} samples for visitors that have {start}")
        heapq.heapify(self._by_seen)
        self.samples += start
        self.gallery.add_rows(identities, counts, vectors)

    def sighted(self, face_id: str, at: datetime) -> IdentityRecord | None:
        """A sighting of the visitor at ``at`` (event time): the record to write when it moves
        ``last_seen`` by :data:`LAST_SEEN_STEP` or more, else None (nothing changes)."""
        visitor = self._visitors[face_id]
        if at - visitor.last_seen < LAST_SEEN_STEP:
            return None
        self._seen_at(face_id, visitor, at)
        return self.record(face_id)

    def tick(self, at: datetime) -> None:
        """An observation of the store captured at ``at``: the clock moves to it if later."""
        if self.clock is None or at > self.clock:
            self.clock = at

    def expired(self, before: datetime, limit: int) -> list[str]:
        """Up to ``limit`` visitors last seen before ``before``, the longest unseen first (the
        caller retires them with :meth:`remove`)."""
        due: list[str] = []
        while self._by_seen and self._by_seen[0][0] < before and len(due) < limit:
            seen, face_id = heapq.heappop(self._by_seen)
            visitor = self._visitors.get(face_id)
            if visitor is not None and visitor.last_seen == seen and face_id not in due:
                due.append(face_id)
        return due

    def learn(
        self, face_id: str, observation_id: str, vector: NDArray[Any], at: datetime
    ) -> IdentityRecord:
        """Add a sample, from a sighting at ``at``, to a visitor; returns the visitor's new
        record (all samples; written anyway, so ``last_seen`` moves to ``at`` if later)."""
        visitor = self._visitors[face_id]
        self._seen_at(face_id, visitor, at)
        self.gallery.add(self._identity(face_id), vector)
        self._source[observation_id] = SampleSource(face_id, len(visitor.learned_from))
        visitor.learned_from.append(observation_id)
        visitor.prints.append(_print(vector))
        self.samples += 1
        return self.record(face_id)

    def remove(self, face_id: str) -> bool:
        """Forget a visitor and every sample of it; False when it was not here."""
        return bool(self.remove_many([face_id]))

    def remove_many(self, face_ids: Iterable[str]) -> list[str]:
        """Forget these visitors and every sample of them, in one gallery removal (which costs
        a pass over the shard however few it erases); returns those that were here."""
        gone: list[str] = []
        held: list[str] = []  # in the gallery, not just staged
        for face_id in face_ids:
            visitor = self._visitors.pop(face_id, None)
            if visitor is None:
                continue
            gone.append(face_id)
            if self._staged.pop(face_id, None) is None:
                held.append(face_id)
            for observation_id in visitor.learned_from:
                self._source.pop(observation_id, None)
            self.samples -= len(visitor.learned_from)
        if held:  # most decisions retire nobody: no write lock for them
            self.gallery.remove_many(held)
        return gone

    def record(self, face_id: str) -> IdentityRecord:
        """The visitor's current ``identities.v1`` record: every sample, in learning order."""
        visitor = self._visitors[face_id]
        by_print = {_print(v): v for v in self.gallery.samples(face_id)}
        encodings = [vector_to_wire(by_print[p]) for p in visitor.prints]
        return IdentityRecord(
            face_id=face_id,
            store_id=self.store_id,
            first_seen=visitor.first_seen,
            observation_id=visitor.learned_from[0],
            encodings=encodings,
            learned_from=list(visitor.learned_from),
            last_seen=visitor.last_seen,
            model_version=self.model_version,
        )

    def distances(self, face_id: str, vector: NDArray[Any]) -> NDArray[np.float32]:
        """Euclidean distance from ``vector`` to each of the visitor's samples, in order."""
        visitor = self._visitors[face_id]
        by_print = {_print(v): v for v in self.gallery.samples(face_id)}
        samples = np.stack([by_print[p] for p in visitor.prints])
        found: NDArray[np.float32] = np.linalg.norm(samples - vector, axis=1).astype(np.float32)
        return found

    def _seen_at(self, face_id: str, visitor: _Visitor, at: datetime) -> None:
        """Move the visitor's ``last_seen`` (and the clock) to ``at`` if later."""
        self.tick(at)
        if at > visitor.last_seen:
            visitor.last_seen = at
            heapq.heappush(self._by_seen, (at, face_id))

    def _identity(self, face_id: str) -> Identity:
        return Identity(face_id, kind="visitor", meta={"store": self.store_id})
