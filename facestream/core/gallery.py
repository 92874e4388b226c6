"""The gallery: identities with several face samples each, searched 1:N with Faiss.

Faiss holds the vectors behind an ``IndexIDMap2`` (IVF indexes keep ids natively) so that
every vector keeps a stable id; the gallery also keeps the raw samples (needed to train IVF on
the data, to recompute per-person means and to rebuild HNSW, which cannot remove in place).
Decisions are open-set: a face is only given an identity when the nearest sample is within the
threshold AND that identity beats the nearest *different* identity by a margin; everything else
is "unknown".

Distances are always reported in dlib's Euclidean unit (its own tolerance is 0.6), whatever the
index: Faiss L2 indexes return squared distances and are converted here, in one place.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

import faiss
import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

DIM: Final = 128
FORMAT_VERSION: Final = 1

# Open-set 1:N defaults, calibrated on ../shared/datasets/lfw-fold1 with `facestream eval
# identify` (see docs/accuracy.md): stricter than dlib's 1:1 tolerance of 0.6, because a stranger
# compared with hundreds of people is likely to fall within 0.6 of one of them (73% of LFW
# strangers do); at 0.50 with a 0.03 margin, 2.9% do and 0.2% of members are taken for others.
DEFAULT_THRESHOLD: Final = 0.50
DEFAULT_MARGIN: Final = 0.03

IndexType = Literal["flat", "ivf", "ivfsq8", "hnsw"]
INDEX_TYPES: Final[tuple[IndexType, ...]] = ("flat", "ivf", "ivfsq8", "hnsw")
Metric = Literal["l2", "cosine"]
Aggregate = Literal["samples", "mean", "trimmed"]
Vectors = NDArray[np.float32]


class GalleryError(ValueError):
    """A request the gallery refuses: a bad vector, an unknown identity, a bad file."""


class UnknownIdentity(GalleryError, KeyError):
    pass


@dataclass(frozen=True)
class GalleryConfig:
    """How the gallery indexes and decides. Saved with the gallery."""

    index: IndexType = "flat"
    metric: Metric = "l2"
    aggregate: Aggregate = "samples"
    """One vector per photo ("samples"), or one per person: the mean, or the mean of the
    samples that lie near the person's median ("trimmed", which drops outlier photos)."""
    threshold: float = DEFAULT_THRESHOLD
    """Largest distance that can be a match (Euclidean, or with metric cosine, the Euclidean
    distance between unit-normalised vectors)."""
    margin: float = DEFAULT_MARGIN
    """How much nearer the best identity must be than the nearest different one."""
    top_k: int = 10
    nlist: int = 0
    """IVF lists; 0 picks about 4*sqrt(N) when the index is trained."""
    nprobe: int = 0
    """IVF lists searched per probe; 0 picks max(8, nlist / 16), which keeps recall@1 near
    0.97 as galleries grow (a fixed 8 fell to 0.54 at 1e6 samples; docs/benchmarks.md)."""
    hnsw_m: int = 32
    ef_search: int = 256
    """HNSW search breadth: 64 gave recall@1 0.85 at 1e6 samples, 256 gives 0.97."""
    min_train: int = 256
    """IVF indexes are trained once the gallery holds this many vectors; until then searches
    are exact over the stored samples."""
    trim_distance: float = 0.45

    def __post_init__(self) -> None:
        if self.index not in INDEX_TYPES:
            raise GalleryError(f"unknown index type {self.index!r}; one of {INDEX_TYPES}")
        if self.metric not in ("l2", "cosine"):
            raise GalleryError(f"unknown metric {self.metric!r}")
        if self.aggregate not in ("samples", "mean", "trimmed"):
            raise GalleryError(f"unknown aggregate {self.aggregate!r}")
        if not (self.threshold > 0 and self.margin >= 0 and self.top_k >= 1):
            raise GalleryError("threshold must be > 0, margin >= 0 and top_k >= 1")


@dataclass(frozen=True)
class Identity:
    """A person the gallery knows: a member, or an anonymous visitor with a minted FaceId."""

    id: str
    name: str = ""
    kind: str = "member"
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    identity: Identity
    distance: float


@dataclass(frozen=True)
class Decision:
    """The open-set verdict for one probe."""

    identity: Identity | None
    distance: float | None
    """Distance to the nearest identity, matched or not (None on an empty gallery)."""
    margin: float | None
    """Distance of the nearest different identity minus ``distance`` (None when there is none)."""
    candidates: tuple[Candidate, ...]
    reason: str
    """``match``, or why not: ``empty_gallery``, ``over_threshold``, ``ambiguous``."""

    @property
    def matched(self) -> bool:
        return self.identity is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "identity": asdict(self.identity) if self.identity else None,
            "distance": _round(self.distance),
            "margin": _round(self.margin),
            "reason": self.reason,
            "candidates": [
                {"id": c.identity.id, "name": c.identity.name, "distance": _round(c.distance)}
                for c in self.candidates
            ],
        }


def _round(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) else round(x, 4)


class _RWLock:
    """Many readers or one writer. Searches run in parallel; changes wait for them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def as_vectors(x: Sequence[NDArray[Any]] | NDArray[Any]) -> Vectors:
    """Validate and convert encodings to a C-contiguous ``(n, 128)`` float32 array."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != DIM:
        raise GalleryError(f"encodings must have {DIM} dimensions, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise GalleryError("encodings contain NaN or infinite values")
    return np.ascontiguousarray(arr)


class _SampleStore:
    """Every sample in id order (ids only grow), in arrays that grow by doubling: an append
    costs what it adds, not a copy of the whole gallery."""

    def __init__(self) -> None:
        self.size = 0
        self._ids = np.empty(0, dtype=np.int64)
        self._owners = np.empty(0, dtype=np.int64)
        self._vectors = np.empty((0, DIM), dtype=np.float32)

    @property
    def ids(self) -> NDArray[np.int64]:
        return self._ids[: self.size]

    @property
    def owners(self) -> NDArray[np.int64]:
        return self._owners[: self.size]

    @property
    def vectors(self) -> Vectors:
        return self._vectors[: self.size]

    def append(self, ids: NDArray[np.int64], owners: NDArray[np.int64], vecs: Vectors) -> None:
        end = self.size + len(ids)
        if end > len(self._ids):
            capacity = max(end, 2 * len(self._ids), 1024)
            self._ids = _grown(self._ids, capacity)
            self._owners = _grown(self._owners, capacity)
            self._vectors = _grown(self._vectors, capacity)
        self._ids[self.size : end] = ids
        self._owners[self.size : end] = owners
        self._vectors[self.size : end] = vecs
        self.size = end

    def replace(self, ids: NDArray[np.int64], owners: NDArray[np.int64], vecs: Vectors) -> None:
        """Hold exactly these samples (after a removal, or on load). The old arrays are dropped,
        so no erased vector lingers in spare capacity."""
        self._ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._owners = np.ascontiguousarray(owners, dtype=np.int64)
        self._vectors = np.ascontiguousarray(vecs, dtype=np.float32)
        self.size = len(self._ids)


def _grown(arr: NDArray[Any], capacity: int) -> NDArray[Any]:
    out = np.zeros((capacity, *arr.shape[1:]), dtype=arr.dtype)
    out[: len(arr)] = arr
    return out


class Gallery:
    """Identities and their samples behind a Faiss index. Reads are thread-safe and parallel."""

    def __init__(self, config: GalleryConfig | None = None) -> None:
        self.config = config or GalleryConfig()
        self._lock = _RWLock()
        self._identities: dict[str, Identity] = {}
        self._number: dict[str, int] = {}  # identity id -> small int used inside arrays
        self._by_number: dict[int, str] = {}
        self._next_number = 0
        self._next_sample = 0
        self._store = _SampleStore()
        self._counts: dict[int, int] = {}  # identity number -> its sample count
        self._max_samples = 0  # the largest count: how far a search must look past one person
        self._index: Any = None
        self._trained_at = 0

    # -- introspection -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._identities)

    @property
    def sample_count(self) -> int:
        return self._store.size

    def __contains__(self, identity_id: object) -> bool:
        return identity_id in self._identities

    def identity(self, identity_id: str) -> Identity:
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
            found: Vectors = self._store.vectors[self._store.owners == number].copy()
            return found

    def index_bytes(self) -> int:
        """Bytes of the Faiss index as serialised (what it costs in memory, roughly)."""
        with self._lock.read():
            if self._index is None or self._index.ntotal == 0:
                return 0
            return int(faiss.serialize_index(self._index).size)

    # -- changes -----------------------------------------------------------------------------

    def add(
        self,
        identity: Identity,
        encodings: Sequence[NDArray[Any]] | NDArray[Any],
    ) -> int:
        """Add samples to an identity, creating it (or updating its metadata). Returns the
        identity's sample count."""
        self.add_many([(identity, encodings)])
        return self._counts[self._number[identity.id]]

    def add_many(
        self, items: Iterable[tuple[Identity, Sequence[NDArray[Any]] | NDArray[Any]]]
    ) -> None:
        """Add many identities' samples at once: one index update (or one build) for all."""
        prepared = [(ident, self._prepare(as_vectors(enc))) for ident, enc in items]
        if not prepared:
            return
        with self._lock.write():
            numbers = []
            for identity, vecs in prepared:
                number = self._number.get(identity.id)
                if number is None:
                    number = self._next_number
                    self._next_number += 1
                    self._number[identity.id] = number
                    self._by_number[number] = identity.id
                self._identities[identity.id] = identity
                ids = np.arange(self._next_sample, self._next_sample + len(vecs), dtype=np.int64)
                self._next_sample += len(vecs)
                self._store.append(ids, np.full(len(vecs), number, dtype=np.int64), vecs)
                self._counts[number] = self._counts.get(number, 0) + len(vecs)
                self._max_samples = max(self._max_samples, self._counts[number])
                numbers.append(number)
            added = sum(len(v) for _, v in prepared)
            self._index_add(numbers, self._store.ids[-added:], self._store.vectors[-added:])

    def remove(self, identity_id: str) -> int:
        """Erase an identity and all its samples from the gallery and its index. Returns the
        number of samples erased. Raises :class:`UnknownIdentity`."""
        with self._lock.write():
            number = self._number.pop(identity_id, None)
            if number is None:
                raise UnknownIdentity(identity_id)
            del self._by_number[number]
            del self._identities[identity_id]
            store = self._store
            keep = store.owners != number
            removed_ids = store.ids[~keep]
            store.replace(store.ids[keep], store.owners[keep], store.vectors[keep])
            if self._counts.pop(number) == self._max_samples:
                self._max_samples = max(self._counts.values(), default=0)
            if self._index is not None:
                keys = np.array([number]) if self._per_identity else removed_ids
                if self.config.index == "hnsw":
                    # HNSW graphs cannot delete a node: rebuild without the erased vectors so
                    # that nothing of the person stays in memory. O(N log N).
                    log.info("HNSW cannot remove in place; rebuilding the index")
                    self._rebuild()
                else:
                    self._index.remove_ids(keys.astype(np.int64))
            return int(removed_ids.size)

    def rebuild(self) -> None:
        """Rebuild (and for IVF retrain) the index from the stored samples."""
        with self._lock.write():
            self._rebuild()

    # -- search ------------------------------------------------------------------------------

    def search(
        self, queries: Sequence[NDArray[Any]] | NDArray[Any], k: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Raw k-nearest search: distances (Euclidean unit) and identity numbers (-1 = none)."""
        q = self._prepare(as_vectors(queries))
        with self._lock.read():
            return self._search(q, k)

    def identify(self, encoding: NDArray[Any]) -> Decision:
        """The open-set decision for one encoding."""
        return self.identify_batch(as_vectors(encoding))[0]

    def identify_batch(self, encodings: Sequence[NDArray[Any]] | NDArray[Any]) -> list[Decision]:
        """Open-set decisions for many encodings in one Faiss call."""
        q = self._prepare(as_vectors(encodings))
        cfg = self.config
        with self._lock.read():
            # Enough neighbours that the nearest *different* identity is among them even when
            # the nearest identity has many samples.
            k = min(cfg.top_k + (1 if self._per_identity else self._max_samples), 1024)
            dist, owners = self._search(q, k)
            # Decided under the read lock: the maps stay consistent with the search without
            # copying them (a copy of 300k identities costs more than the search itself).
            return [
                self._decide(d, o, self._by_number, self._identities)
                for d, o in zip(dist, owners, strict=True)
            ]

    def _decide(
        self,
        dist: NDArray[np.float32],
        owners: NDArray[np.int64],
        by_number: dict[int, str],
        identities: dict[str, Identity],
    ) -> Decision:
        best: dict[int, float] = {}
        for d, o in zip(dist.tolist(), owners.tolist(), strict=True):
            if o >= 0 and o not in best:
                best[o] = d
        if not best:
            return Decision(None, None, None, (), "empty_gallery")
        ranked = sorted(best.items(), key=lambda kv: kv[1])[: self.config.top_k]
        cands = tuple(Candidate(identities[by_number[o]], float(d)) for o, d in ranked)
        top = cands[0]
        margin = cands[1].distance - top.distance if len(cands) > 1 else None
        if top.distance > self.config.threshold:
            return Decision(None, top.distance, margin, cands, "over_threshold")
        if margin is not None and margin < self.config.margin:
            return Decision(None, top.distance, margin, cands, "ambiguous")
        return Decision(top.identity, top.distance, margin, cands, "match")

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the gallery to one file, atomically (a crash leaves the old file whole)."""
        path = Path(path)
        with self._lock.read():
            meta = {
                "format": FORMAT_VERSION,
                "config": asdict(self.config),
                "identities": [
                    {**asdict(self._identities[i]), "number": n}
                    for i, n in sorted(self._number.items(), key=lambda kv: kv[1])
                ],
                "next_number": self._next_number,
                "next_sample": self._next_sample,
            }
            arrays: dict[str, Any] = {
                "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                "sample_ids": self._store.ids,
                "owners": self._store.owners,
                "vectors": self._store.vectors,
            }
            if self._index is not None and self.config.index != "flat":
                # Trained indexes are saved whole so that loading does not retrain.
                arrays["index"] = faiss.serialize_index(self._index)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, **arrays)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> Gallery:
        """Read a gallery saved by :meth:`save`. ``overrides`` replace decision settings
        (threshold, margin, top_k, nprobe, ef_search)."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                arrays = {k: data[k] for k in data.files if k != "meta"}
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise GalleryError(f"{path} is not a facestream gallery: {exc}") from exc
        if meta.get("format") != FORMAT_VERSION:
            raise GalleryError(f"{path}: unsupported gallery format {meta.get('format')!r}")
        config = replace(GalleryConfig(**meta["config"]), **overrides)
        g = cls(config)
        for rec in meta["identities"]:
            number = int(rec.pop("number"))
            ident = Identity(**rec)
            g._identities[ident.id] = ident
            g._number[ident.id] = number
            g._by_number[number] = ident.id
        g._next_number = int(meta["next_number"])
        g._next_sample = int(meta["next_sample"])
        g._store.replace(arrays["sample_ids"], arrays["owners"], arrays["vectors"])
        numbers, counts = np.unique(g._store.owners, return_counts=True)
        g._counts = dict(zip(numbers.tolist(), counts.tolist(), strict=True))
        g._max_samples = max(g._counts.values(), default=0)
        if "index" in arrays:
            g._index = faiss.deserialize_index(arrays["index"])
            g._trained_at = g.sample_count
            g._apply_search_params()
        else:
            g._rebuild()
        return g

    # -- internals ---------------------------------------------------------------------------

    @property
    def _per_identity(self) -> bool:
        return self.config.aggregate != "samples"

    def _prepare(self, vecs: Vectors) -> Vectors:
        if self.config.metric == "cosine":
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def _person_vector(self, number: int) -> Vectors:
        samples = self._store.vectors[self._store.owners == number]
        if self.config.aggregate == "trimmed" and len(samples) >= 3:
            center = np.median(samples, axis=0)
            near = samples[np.linalg.norm(samples - center, axis=1) <= self.config.trim_distance]
            if len(near):
                samples = near
        vec = samples.mean(axis=0, keepdims=True).astype(np.float32)
        return self._prepare(vec)

    def _new_index(self, n: int) -> Any:
        cfg = self.config
        ip = cfg.metric == "cosine"
        metric = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
        inner: Any
        if cfg.index == "hnsw":
            inner = faiss.IndexHNSWFlat(DIM, cfg.hnsw_m, metric)
            inner.hnsw.efConstruction = 80
        elif cfg.index in ("ivf", "ivfsq8"):
            nlist = cfg.nlist or int(np.clip(4 * math.sqrt(n), 1, max(1, n // 39)))
            quantizer = faiss.IndexFlatIP(DIM) if ip else faiss.IndexFlatL2(DIM)
            if cfg.index == "ivf":
                inner = faiss.IndexIVFFlat(quantizer, DIM, nlist, metric)
            else:
                inner = faiss.IndexIVFScalarQuantizer(
                    quantizer, DIM, nlist, faiss.ScalarQuantizer.QT_8bit, metric
                )
            # IVF stores ids natively. Wrapping it in IndexIDMap2 breaks removal: the wrapper
            # compacts its id map as if the inner index renumbered its vectors, which only
            # Flat does (after remove_ids the wrong people come back).
            return inner
        else:
            inner = faiss.IndexFlatIP(DIM) if ip else faiss.IndexFlatL2(DIM)
        return faiss.IndexIDMap2(inner)

    def _keys_and_vectors(self) -> tuple[NDArray[np.int64], Vectors]:
        if not self._per_identity:
            return self._store.ids, self._store.vectors
        numbers = np.array(sorted(self._by_number), dtype=np.int64)
        if not numbers.size:
            return numbers, np.empty((0, DIM), dtype=np.float32)
        return numbers, np.concatenate([self._person_vector(int(n)) for n in numbers])

    def _rebuild(self) -> None:
        keys, vecs = self._keys_and_vectors()
        self._index = None
        self._trained_at = 0
        if self.config.index in ("ivf", "ivfsq8") and len(vecs) < self.config.min_train:
            return  # searches stay exact until there is enough data to train on
        index = self._new_index(len(vecs))
        if not index.is_trained:
            # 256 points per list is plenty for k-means; more only makes training slower.
            ivf: Any = faiss.downcast_index(index)
            cap = 256 * int(ivf.nlist)
            sample = vecs
            if len(vecs) > cap:
                sample = vecs[np.random.default_rng(0).choice(len(vecs), cap, replace=False)]
            index.train(np.ascontiguousarray(sample))
        if len(vecs):
            index.add_with_ids(vecs, keys)
        self._index = index
        self._trained_at = len(vecs)
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        index: Any = faiss.downcast_index(self._index)
        inner: Any = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
        if hasattr(inner, "nprobe"):
            inner.nprobe = self.config.nprobe or max(8, int(inner.nlist) // 16)
        if hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = self.config.ef_search

    def _index_add(self, numbers: list[int], ids: NDArray[np.int64], vecs: Vectors) -> None:
        total = len(self._by_number) if self._per_identity else self.sample_count
        ivf = self.config.index in ("ivf", "ivfsq8")
        if self._index is None or (ivf and total >= 4 * self._trained_at):
            # First build, or an IVF index trained on a much smaller gallery: its lists no
            # longer fit the data, so retrain on everything.
            self._rebuild()
        elif self._per_identity:
            if self.config.index == "hnsw":
                self._rebuild()
            else:
                changed = np.unique(np.array(numbers, dtype=np.int64))
                self._index.remove_ids(changed)
                person = np.concatenate([self._person_vector(int(n)) for n in changed])
                self._index.add_with_ids(person, changed)
        else:
            self._index.add_with_ids(vecs, ids)

    def _search(self, q: Vectors, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        if self._index is None:
            dist, keys = self._exact(q, k)
        else:
            k = min(k, max(1, int(self._index.ntotal)))
            raw, keys = self._index.search(q, k)
            # L2 indexes return squared distances; inner product on unit vectors returns the
            # cosine s, and |a - b| = sqrt(2 - 2s) there. Either way: one Euclidean unit.
            squared = 2.0 - 2.0 * raw if self.config.metric == "cosine" else raw
            dist = np.sqrt(np.maximum(squared, 0.0))
        owners = np.full(keys.shape, -1, dtype=np.int64)
        valid = keys >= 0
        if self._per_identity:
            owners[valid] = keys[valid]
        elif self._store.size:
            rows = np.searchsorted(self._store.ids, keys[valid])
            owners[valid] = self._store.owners[np.minimum(rows, self._store.size - 1)]
        return dist.astype(np.float32), owners

    def _exact(self, q: Vectors, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        keys, vecs = self._keys_and_vectors()
        if not len(vecs):
            return (
                np.full((len(q), 1), np.inf, dtype=np.float32),
                np.full((len(q), 1), -1, dtype=np.int64),
            )
        k = min(k, len(vecs))
        d2 = faiss.pairwise_distances(q, vecs)
        order = np.argsort(d2, axis=1)[:, :k]
        dist = np.sqrt(np.maximum(np.take_along_axis(d2, order, axis=1), 0.0))
        return dist.astype(np.float32), keys[order]
