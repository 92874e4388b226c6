"""The :class:`Gallery`: identities and their samples, the Faiss index over them, and the lock
that lets searches run in parallel while changes wait.

With ``index="auto"`` the raw samples live in a mapped file (:mod:`.vector_file`) and the index
is flat (exact) below ``exact_below`` samples, then a compressed index re-ranked exactly, built
and rebuilt in the background (:mod:`.builds`)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from facestream.core.gallery import builds, faiss_index, persistence
from facestream.core.gallery.decide import decide, neighbours_needed
from facestream.core.gallery.locking import RWLock
from facestream.core.gallery.samples import SampleStore, as_vectors
from facestream.core.gallery.types import (
    DIM,
    Decision,
    GalleryConfig,
    GalleryError,
    Identity,
    Neighbours,
    UnknownIdentity,
    Vectors,
)
from facestream.core.gallery.vector_file import VectorFile

log = logging.getLogger(__name__)

# Encodings as callers pass them: one vector, a list of vectors or an (n, 128) array.
VectorInput = Sequence[NDArray[Any]] | NDArray[Any]


JOURNAL: Final = 256
"""Changes a gallery remembers (:meth:`Gallery.changes_since`), for caches that follow it."""
JOURNAL_IDENTITIES: Final = 64
"""An add of more identities than this (a bulk load) is journalled as a change of everything."""


@dataclass(frozen=True)
class Change:
    """One change of a gallery, as :meth:`Gallery.changes_since` reports it: which identities
    gained samples and which went (ids only: the journal holds no encodings)."""

    generation: int
    """The gallery's :attr:`~Gallery.generation` once the change was made."""
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    everything: bool = False
    """Too many identities changed to name them (a bulk load): a follower starts afresh."""


@dataclass(frozen=True)
class _Prefetched:
    """Decisions made ahead by :meth:`Gallery.prefetch`, by probe bytes, and the state of the
    gallery they were made on."""

    generation: int
    index: Any
    decisions: dict[bytes, Decision]

    def valid_for(self, gallery: Gallery) -> bool:
        # The index too: a compressed index swapped in does not change the samples.
        return gallery._generation == self.generation and gallery._index is self.index


class Gallery:
    """Identities and their samples behind a Faiss index. Reads are thread-safe and parallel."""

    def __init__(self, config: GalleryConfig | None = None) -> None:
        self.config = config or GalleryConfig()
        self._lock = RWLock()
        self._identities: dict[str, Identity] = {}
        self._number: dict[str, int] = {}  # identity id -> small int used inside arrays
        self._by_number: dict[int, Identity] = {}
        self._next_number = 0
        self._next_sample = 0
        self._store = (
            VectorFile(self.config.vector_dir) if self.config.index == "auto" else SampleStore()
        )
        self._counts: dict[int, int] = {}  # identity number -> its sample count
        # How many identities hold each count, so that the largest is found again without a pass
        # over every identity when its last holder goes (in a visitor shard most hold one).
        self._holding: Counter[int] = Counter()
        self._max_samples = 0  # the largest count: how far a search must look past one person
        self._index: Any = None
        self._trained_at = 0
        self._compressed = False  # auto: the index is the compressed one (else flat)
        self._build: builds.Build | None = None  # auto: a compressed index being built
        self._build_error: BaseException | None = None
        self._generation = 0  # bumped by every change: caches of derived figures compare it
        self._journal: deque[Change] = deque(maxlen=JOURNAL)  # the latest changes, oldest first
        self._prefetched: _Prefetched | None = None  # see prefetch()

    # -- introspection -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._identities)

    @property
    def generation(self) -> int:
        """A number that changes whenever identities or samples are added or removed."""
        return self._generation

    def changes_since(self, generation: int) -> list[Change] | None:
        """The changes made after ``generation``, oldest first; None when the journal no
        longer reaches back that far (a follower must then start afresh)."""
        with self._lock.read():
            if generation == self._generation:
                return []
            journal = self._journal
            reaches = bool(journal) and journal[0].generation <= generation + 1
            if generation > self._generation or not reaches:
                return None
            return [c for c in journal if c.generation > generation]

    @property
    def sample_count(self) -> int:
        """Samples held, over every identity."""
        return self._store.size

    def __contains__(self, identity_id: object) -> bool:
        return identity_id in self._identities

    def identity(self, identity_id: str) -> Identity:
        """The identity with this id; raises :class:`UnknownIdentity`."""
        try:
            return self._identities[identity_id]
        except KeyError:
            raise UnknownIdentity(identity_id) from None

    def identities(self) -> list[Identity]:
        """Every identity, sorted by id."""
        with self._lock.read():
            return [self._identities[k] for k in sorted(self._identities)]

    def samples(self, identity_id: str) -> Vectors:
        """The stored encodings of one identity (a copy)."""
        with self._lock.read():
            number = self._number.get(identity_id)
            if number is None:
                raise UnknownIdentity(identity_id)
            return self._store.of_owner(number)

    def export(self) -> tuple[list[str], Vectors]:
        """Every sample as its identity's id and its vector, in the order they were added (a
        copy): what a snapshot of the gallery needs, in one pass rather than one per identity."""
        with self._lock.read():
            by_number = self._by_number
            ids = [by_number[number].id for number in self._store.owners.tolist()]
            return ids, self._store.vectors

    def index_bytes(self) -> int:
        """Bytes of the Faiss index as serialised (what it costs in memory, roughly)."""
        with self._lock.read():
            if self._index is None or self._index.ntotal == 0:
                return 0
            return int(faiss_index.serialize(self._index).size)

    def resident_bytes(self) -> int:
        """Bytes the gallery's vectors cost in RAM: the index as serialised, plus the sample
        store's arrays (the raw vectors when they are kept in RAM; with ``auto``, only ids,
        owners and file rows, the vectors being in a mapped file)."""
        return self.index_bytes() + self._store.nbytes()

    @property
    def compressed(self) -> bool:
        """Whether searches run on a compressed index (``auto`` past ``exact_below``)."""
        return self._compressed

    @property
    def partition_lists(self) -> int:
        """IVF lists the compressed index puts its codes in (``auto``, from
        ``faiss_index.IVF_FROM`` samples at build time when that is set); 0 when every code is
        scanned (the shipped setting) or the search is exact."""
        with self._lock.read():
            if not self._compressed or self._index is None:
                return 0
            return faiss_index.partition_lists(self._index)

    # -- changes -----------------------------------------------------------------------------

    def add(self, identity: Identity, encodings: VectorInput) -> int:
        """Add samples to an identity, creating it (or updating its metadata). Returns the
        identity's sample count."""
        self.add_many([(identity, encodings)])
        return self._counts[self._number[identity.id]]

    def add_many(self, items: Iterable[tuple[Identity, VectorInput]]) -> None:
        """Add many identities' samples at once: one index update (or one build) for all.

        The samples are checked, stored and indexed as one block: a bulk load (a shard taken
        over, a million one-sample identities) costs per sample, not numpy calls per identity."""
        identities: list[Identity] = []
        blocks: list[Vectors] = []
        for ident, enc in items:
            arr = np.asarray(enc, dtype=np.float32)
            if arr.ndim == 1:
                arr = arr[None, :]
            identities.append(ident)
            # Anything but (n, 128) goes through as_vectors, which refuses it with its shape.
            blocks.append(arr if arr.ndim == 2 and arr.shape[1] == DIM else as_vectors(arr))
        if not identities:
            return
        self.add_rows(identities, [len(b) for b in blocks], np.concatenate(blocks))

    def add_rows(
        self, identities: Sequence[Identity], counts: Sequence[int], vectors: VectorInput
    ) -> None:
        """:meth:`add_many` of samples already in one block: the first ``counts[0]`` rows of
        ``vectors`` for ``identities[0]``, and so on (a snapshot loaded: no array per
        identity)."""
        if len(identities) != len(counts) or sum(counts) != len(vectors):
            raise GalleryError(
                f"{len(identities)} identities, {len(counts)} counts, {sum(counts)} samples "
                f"counted, {len(vectors)} given"
            )
        if not identities:
            return
        vecs = self._prepare(as_vectors(vectors))
        with self._lock.write():
            build = self._add_locked(list(identities), list(counts), vecs)
        if build is not None:
            self._start_build(build)

    def remove(self, identity_id: str) -> int:
        """Erase an identity and all its samples from the gallery and its index. Returns the
        number of samples erased. Raises :class:`UnknownIdentity`."""
        with self._lock.write():
            if identity_id not in self._number:
                raise UnknownIdentity(identity_id)
            return self._erase_locked(*self._forget_locked([identity_id]))

    def remove_many(self, identity_ids: Iterable[str]) -> int:
        """Erase these identities and all their samples, as :meth:`remove` would one after the
        other, in one pass: one write lock, one pass over the samples, one index update (or
        one HNSW rebuild). A removal costs a pass over what the gallery holds however few it
        erases, so a batch (the visitors retired before a decision) costs about one removal.
        Ids not in the gallery are skipped, as are repeats. Returns the samples erased."""
        with self._lock.write():
            return self._erase_locked(*self._forget_locked(identity_ids))

    def rebuild(self) -> None:
        """Rebuild (and for IVF retrain) the index from the stored samples. With ``auto`` past
        ``exact_below``, a compressed build in the calling thread (or the one running)."""
        if self.config.index != "auto":
            with self._lock.write():
                self._rebuild()
            return
        with self._lock.write():
            self._build_error = None
            build = self._build
            if build is None:
                if self.sample_count < self.config.exact_below:
                    self._rebuild()
                    return
                build = self._build = builds.Build(self._next_sample - 1)
            else:
                build = None  # one is running: it reads what it began with, then replays the rest
        if build is not None:
            self._run_build(build)
        self.wait_for_build()

    def wait_for_build(self) -> None:
        """Block until the compressed index being built (``auto``) is swapped in; raises
        :class:`GalleryError` when the last build failed (searches stayed on the old index)."""
        build = self._build
        if build is not None:
            build.done.wait()
        if self._build_error is not None:
            raise GalleryError(f"building the compressed index failed: {self._build_error}")

    # -- search ------------------------------------------------------------------------------

    def search(self, queries: VectorInput, k: int) -> Neighbours:
        """Raw k-nearest search: distances (Euclidean unit) and identity numbers (-1 = none)
        of the ``k`` nearest samples (or, aggregated, people)."""
        q = self._prepare(as_vectors(queries))
        with self._lock.read():
            return self._search(q, k)

    def identify(self, encoding: NDArray[Any]) -> Decision:
        """The open-set decision for one encoding."""
        return self.identify_batch(as_vectors(encoding))[0]

    def identify_batch(self, encodings: VectorInput) -> list[Decision]:
        """Open-set decisions for many encodings in one Faiss call (those :meth:`prefetch`
        decided on the gallery as it still is are not searched again)."""
        q = self._prepare(as_vectors(encodings))
        with self._lock.read():
            held = self._prefetched
            if held is None or not held.valid_for(self):
                return self._decide(q)
            found = [held.decisions.get(row.tobytes()) for row in q]
            missing = [i for i, d in enumerate(found) if d is None]
            if missing:
                for i, decision in zip(missing, self._decide(q[missing]), strict=True):
                    found[i] = decision
            return [d for d in found if d is not None]

    def prefetch(self, encodings: VectorInput) -> None:
        """Decide ``encodings`` now, in one search, for the :meth:`identify` calls that will
        ask about them one by one (a worker's poll batch, decided face by face).

        The decisions are used only while the gallery is unchanged (no sample added or
        removed, the same index): a change makes every later call search again. So a call
        answers exactly as without the prefetch: a probe's neighbours do not depend on the
        other probes searched with it (``tests/core/test_gallery_prefetch.py`` checks it on
        every kind of index). Only the latest prefetch is held."""
        q = self._prepare(as_vectors(encodings))
        if not len(q):
            return
        with self._lock.read():
            decisions = self._decide(q)
            self._prefetched = _Prefetched(
                self._generation,
                self._index,
                {row.tobytes(): d for row, d in zip(q, decisions, strict=True)},
            )

    def _decide(self, q: Vectors) -> list[Decision]:
        """The decisions for prepared probes ``q``, searched now (under the read lock)."""
        dist, owners = self._search(q, neighbours_needed(self.config, self._max_samples))
        # Decided under the read lock: the map stays consistent with the search without
        # copying it (a copy of 300k identities costs more than the search itself).
        return [
            decide(d, o, self._by_number, self.config) for d, o in zip(dist, owners, strict=True)
        ]

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the gallery to one file, atomically (a crash leaves the old file whole)."""
        with self._lock.read():
            contents = persistence.GalleryFile(
                config=self.config,
                identities={n: self._by_number[n] for n in sorted(self._by_number)},
                next_number=self._next_number,
                next_sample=self._next_sample,
                sample_ids=self._store.ids,
                owners=self._store.owners,
                vectors=self._store.vectors,
                # Trained indexes are saved whole so that loading does not retrain; a flat
                # one costs less to rebuild than to read.
                index=self._index if self.config.index != "flat" and not self._flat else None,
            )
            persistence.write(Path(path), contents)

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> Gallery:
        """Read a gallery saved by :meth:`save`. ``overrides`` replace decision settings
        (threshold, margin, top_k, nprobe, ef_search)."""
        contents = persistence.read(Path(path), **overrides)
        g = cls(contents.config)
        for number, ident in contents.identities.items():
            g._identities[ident.id] = ident
            g._number[ident.id] = number
            g._by_number[number] = ident
        g._next_number = contents.next_number
        g._next_sample = contents.next_sample
        g._store.replace(contents.sample_ids, contents.owners, contents.vectors)
        numbers, counts = np.unique(g._store.owners, return_counts=True)
        g._counts = dict(zip(numbers.tolist(), counts.tolist(), strict=True))
        g._holding = Counter(g._counts.values())
        g._max_samples = max(g._holding, default=0)
        if contents.index is not None:
            g._index = contents.index
            g._trained_at = g.sample_count
            g._compressed = g.config.index == "auto"
        else:
            g._rebuild()
        with g._lock.write():
            build = g._due_build()
        if build is not None:
            g._start_build(build)
        return g

    # -- internals ---------------------------------------------------------------------------

    def _prepare(self, vecs: Vectors) -> Vectors:
        if self.config.metric == "cosine":
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    @property
    def _flat(self) -> bool:
        """Whether the index is an ``auto`` gallery's exact one (not saved: cheap to rebuild)."""
        return self.config.index == "auto" and not self._compressed

    def _person_vector(self, number: int) -> Vectors:
        samples = self._store.of_owner(number)
        if self.config.aggregate == "trimmed" and len(samples) >= 3:
            center = np.median(samples, axis=0)
            near = samples[np.linalg.norm(samples - center, axis=1) <= self.config.trim_distance]
            if len(near):
                samples = near
        vec = samples.mean(axis=0, keepdims=True).astype(np.float32)
        return self._prepare(vec)

    def _keys_and_vectors(self) -> tuple[NDArray[np.int64], Vectors]:
        """What the index holds: every sample under its id, or (aggregated) one vector per
        person under the identity's number."""
        if not self.config.per_identity:
            return self._store.ids, self._store.vectors
        numbers = np.array(sorted(self._by_number), dtype=np.int64)
        if not numbers.size:
            return numbers, np.empty((0, DIM), dtype=np.float32)
        return numbers, np.concatenate([self._person_vector(int(n)) for n in numbers])

    def _rebuild(self) -> None:
        keys, vecs = self._keys_and_vectors()
        self._index = None
        self._trained_at = 0
        self._compressed = False  # auto: exact until a compressed build swaps in
        index = faiss_index.build_index(self.config, keys, vecs)
        if index is not None:
            self._index = index
            self._trained_at = len(vecs)

    def _add_locked(
        self, identities: list[Identity], counts: list[int], vecs: Vectors
    ) -> builds.Build | None:
        """Store and index ``vecs`` under the write lock, the first ``counts[0]`` rows for
        ``identities[0]`` and so on; returns a compressed build that has become due (``auto``),
        for the caller to start once the lock is released."""
        numbers = []
        for identity, count in zip(identities, counts, strict=True):
            number = self._number.get(identity.id)
            if number is None:
                number = self._next_number
                self._next_number += 1
                self._number[identity.id] = number
            self._by_number[number] = identity
            self._identities[identity.id] = identity
            before = self._counts.get(number, 0)
            if before:
                self._uncount(before)
            held = self._counts[number] = before + count
            self._holding[held] += 1
            self._max_samples = max(self._max_samples, held)
            numbers.append(number)
        ids = np.arange(self._next_sample, self._next_sample + len(vecs), dtype=np.int64)
        self._next_sample += len(vecs)
        self._store.append(ids, np.repeat(np.array(numbers, dtype=np.int64), counts), vecs)
        self._generation += 1
        named = tuple(dict.fromkeys(identity.id for identity in identities))
        if len(named) > JOURNAL_IDENTITIES:
            self._journal.append(Change(self._generation, everything=True))
        else:
            self._journal.append(Change(self._generation, added=named))
        self._prefetched = None  # nor held: it may name what was just removed
        self._index_add(numbers, ids, vecs)
        return self._due_build()

    def _forget_locked(
        self, identity_ids: Iterable[str]
    ) -> tuple[NDArray[np.int64], tuple[str, ...]]:
        """Drop these identities (those held) from the maps; returns their numbers and ids."""
        numbers, forgotten = [], []
        for identity_id in identity_ids:
            number = self._number.pop(identity_id, None)
            if number is not None:
                del self._by_number[number]
                del self._identities[identity_id]
                numbers.append(number)
                forgotten.append(identity_id)
        return np.array(numbers, dtype=np.int64), tuple(forgotten)

    def _erase_locked(self, numbers: NDArray[np.int64], ids: tuple[str, ...]) -> int:
        """Erase the samples of the identities ``numbers`` (already forgotten; their ``ids``)
        from the store and the index; returns how many there were."""
        if not numbers.size:
            return 0
        self._generation += 1
        self._journal.append(Change(self._generation, removed=ids))
        self._prefetched = None  # nor held: it may name what was just removed
        removed_ids = self._store.remove_owners(numbers)
        if self._build is not None:
            self._build.removed.append(removed_ids)
        for number in numbers.tolist():
            self._uncount(self._counts.pop(number))
        if self._index is not None:
            keys = numbers if self.config.per_identity else removed_ids
            if self.config.index == "hnsw":
                # HNSW graphs cannot delete a node: rebuild without the erased vectors so
                # that nothing of the person stays in memory. O(N log N).
                log.info("HNSW cannot remove in place; rebuilding the index")
                self._rebuild()
            else:
                faiss_index.remove_ids(self._index, keys)
        return int(removed_ids.size)

    def _uncount(self, held: int) -> None:
        """One identity no longer holds ``held`` samples (it grew, or went)."""
        self._holding[held] -= 1
        if not self._holding[held]:
            del self._holding[held]
            if held == self._max_samples:
                self._max_samples = max(self._holding, default=0)

    def _index_add(self, numbers: list[int], ids: NDArray[np.int64], vecs: Vectors) -> None:
        total = len(self._by_number) if self.config.per_identity else self.sample_count
        if self.config.index == "auto" and self._index is not None:
            self._index.add_with_ids(vecs, ids)  # a larger one is built in the background
        elif self._index is None or (self.config.ivf and total >= 4 * self._trained_at):
            # First build, or an IVF index trained on a much smaller gallery: its lists no
            # longer fit the data, so retrain on everything.
            self._rebuild()
        elif self.config.per_identity:
            if self.config.index == "hnsw":
                self._rebuild()
            else:
                changed = np.unique(np.array(numbers, dtype=np.int64))
                self._index.remove_ids(changed)
                person = np.concatenate([self._person_vector(int(n)) for n in changed])
                self._index.add_with_ids(person, changed)
        else:
            self._index.add_with_ids(vecs, ids)

    def _due_build(self) -> builds.Build | None:
        """Reserve a compressed build if one is due (``auto``; under the write lock). After a
        failed build none is, until :meth:`rebuild`: the same failure would repeat on every
        add."""
        if self.config.index != "auto" or self._build or self._build_error is not None:
            return None
        compressed_at = self._trained_at if self._compressed else 0
        if not builds.is_due(self.sample_count, compressed_at, self.config.exact_below):
            return None
        self._build = builds.Build(self._next_sample - 1)
        return self._build

    def _start_build(self, build: builds.Build) -> None:
        if not self.config.background_build:
            self._run_build(build)
            return
        thread = threading.Thread(
            target=self._run_build, args=(build,), name="gallery-build", daemon=True
        )
        thread.start()

    def _run_build(self, build: builds.Build) -> None:
        """Build, replay what changed meanwhile and swap in; on failure, log, remember the
        error for :meth:`wait_for_build` and stay on the current index."""
        started = time.perf_counter()
        try:
            # One core for the build, the others for searches (the setting is per thread, and
            # several threads fighting for busy cores made training 10x slower here).
            with faiss_index.one_thread():
                index = builds.build_compressed(build, self._lock, self._store)
            with self._lock.write():
                builds.replay(build, index, self._store)
                self._index, self._compressed = index, True
                self._prefetched = None
                self._trained_at = int(index.ntotal)
                self._build = None
                after = self._due_build()
            log.info(
                "compressed index of %d samples swapped in after %.1fs",
                self._trained_at,
                time.perf_counter() - started,
            )
        except Exception as exc:
            log.exception("building the compressed index failed; searches stay on the old one")
            with self._lock.write():
                self._build, self._build_error = None, exc
            after = None
        finally:
            build.done.set()
        if after is not None:
            self._start_build(after)

    def _search(self, q: Vectors, k: int) -> Neighbours:
        """The nearest neighbours, labelled with their identity numbers."""
        if self._compressed:
            dist, keys = faiss_index.search_reranked(
                self._index, q, k, self.config.rerank, self._store.vectors_of
            )
        elif self._index is None:
            dist, keys = faiss_index.search_exact(q, *self._keys_and_vectors(), k)
        else:
            dist, keys = faiss_index.search_index(self._index, q, k, self.config)
        owners = np.full(keys.shape, -1, dtype=np.int64)
        valid = keys >= 0
        if self.config.per_identity:
            owners[valid] = keys[valid]
        elif self._store.size:
            owners[valid] = self._store.owners_of(keys[valid])
        return Neighbours(dist, owners)
