"""Faiss internals: which index to build, how to train it, how to search it, its parameters.

Every vector keeps a stable id: HNSW sits behind an ``IndexIDMap2``, Flat and the compressed
index of ``auto`` behind an ``IndexIDMap``; IVF indexes keep ids natively. Flat indexes are
never saved (they cost less to rebuild than to read), so their wrapper is free to change: the
reverse map of ``IndexIDMap2``, which nothing here reads, is rebuilt on every removal.
Distances leave this module in dlib's Euclidean unit (its own tolerance is 0.6), whatever the
index: Faiss L2 indexes return squared distances and are converted here, in one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import faiss
import numpy as np
from numpy.typing import NDArray

from facestream.core.gallery.types import DIM, GalleryConfig, Neighbours, Vectors

Keys = NDArray[np.int64]


# The compressed index of ``auto``: product quantization, 64 sub-vectors of 4 bits (32 bytes a
# sample), every code scanned with Faiss's SIMD "fast scan", then re-ranked exactly (an IVF
# partition in front of the codes is built but off: IVF_FROM below).
# Measured on synthetic face-like encodings (docs/benchmarks.md): a partition loses the nearest
# sample of a new photo to another list too often (256 lists at 1e6: recall@1 0.976 scanning a
# quarter of them, 0.998 with half; about 4*sqrt(N) lists: 0.996-0.999 with a quarter) for what
# it saves. 32 sub-vectors (16 bytes) gave 0.989 scanning every code.
COMPRESSED: Final = "PQ64x4fs"
RERANK_BLOCK: Final = 16
TRAIN_SAMPLE: Final = 65_536
"""Vectors a compressed index is trained on: the codebooks have 16 centroids per sub-vector,
so this is far past what k-means needs and training takes about a second."""
# An IVF partition in front of the codes: about 4*sqrt(N) lists, a quarter of them scanned per
# probe. Built, tested and measured, not adopted (docs/benchmarks.md, "A partition in front of
# the codes"): at 1e6 synthetic face-like samples it cut a batched search 1.6x but recall@1
# against exact search fell to 0.996-0.999 (1,000 probes; the issue asks 0.997), a single probe
# got slower and a build took 37 s instead of 8. Off by default; benchmarks turn it on.
IVF_FROM = 0
"""Samples at build time from which a compressed index partitions its codes; 0: never."""
IVF_SHARE: Final = 4
"""A partitioned compressed index scans 1/IVF_SHARE of its lists per probe."""


def new_index(config: GalleryConfig, n: int) -> Any:
    """An empty (and for IVF untrained) index for ``n`` vectors."""
    ip = config.metric == "cosine"
    metric = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
    inner: Any
    if config.index == "hnsw":
        inner = faiss.IndexHNSWFlat(DIM, config.hnsw_m, metric)
        inner.hnsw.efConstruction = 80
    elif config.ivf:
        nlist = config.nlist or int(np.clip(4 * math.sqrt(n), 1, max(1, n // 39)))
        quantizer = faiss.IndexFlatIP(DIM) if ip else faiss.IndexFlatL2(DIM)
        if config.index == "ivf":
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
        return faiss.IndexIDMap(faiss.IndexFlatIP(DIM) if ip else faiss.IndexFlatL2(DIM))
    return faiss.IndexIDMap2(inner)


def remove_ids(index: Any, keys: Keys) -> None:
    """Remove the vectors held under ``keys`` (absent keys are ignored).

    Faiss removes from a flat index by shifting every vector after the first removed one down
    by one: a pass over the whole index, the same for one key as for thousands (7 ms at 80k
    vectors, where a store's shard retires about one visitor per decision). Here a flat index
    behind an ``IndexIDMap`` has its last live vectors moved into the removed ones' rows and
    the tail zeroed, as the sample store does; then the tail, now at the end, is cut by Faiss
    itself (a scan, no shift), which keeps its own bookkeeping (an ``IndexIDMap2`` rebuilds its
    reverse map). The erased vectors are overwritten in memory, as by Faiss's own shift. Other
    indexes remove their own way."""
    index = faiss.downcast_index(index)
    flat = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else None
    if not isinstance(flat, faiss.IndexFlat):
        index.remove_ids(keys)
        return
    n = int(index.ntotal)
    if not n:
        return
    # Views of Faiss's own arrays (written in place; valid while nothing is added).
    ids: Keys = faiss.rev_swig_ptr(index.id_map.data(), n)
    rows = faiss.rev_swig_ptr(flat.get_xb(), n * DIM).reshape(n, DIM)
    gone = np.flatnonzero(np.isin(ids, keys))
    if not gone.size:
        return
    end = n - gone.size
    holes = gone[gone < end]
    movers = np.setdiff1d(np.arange(end, n), gone, assume_unique=True)
    rows[holes] = rows[movers]
    ids[holes] = ids[movers]
    rows[end:] = 0
    # Distinct negative keys (the gallery's are >= 0) mark the tail for Faiss to cut.
    ids[end:] = -1 - np.arange(n - end)
    index.remove_ids(ids[end:].copy())


def build_index(config: GalleryConfig, keys: NDArray[np.int64], vecs: Vectors) -> Any | None:
    """A new index holding ``vecs`` under ``keys``, trained if it needs training; None for an
    IVF kind with fewer than ``min_train`` vectors."""
    if config.ivf and len(vecs) < config.min_train:
        return None  # searches stay exact until there is enough data to train on
    index = new_index(config, len(vecs))
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
    apply_search_params(index, config)
    return index


def apply_search_params(index: Any, config: GalleryConfig) -> None:
    """Set the search-time knobs (IVF ``nprobe``, HNSW ``efSearch``) from ``config``."""
    index = faiss.downcast_index(index)
    inner: Any = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    if hasattr(inner, "nprobe"):
        if config.index == "auto":  # a partitioned compressed index: its own share
            inner.nprobe = compressed_nprobe(int(inner.nlist))
        else:
            inner.nprobe = config.nprobe or max(8, int(inner.nlist) // 16)
    if hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = config.ef_search


def search_index(index: Any, q: Vectors, k: int, config: GalleryConfig) -> Neighbours:
    """The ``k`` nearest keys in ``index``, at Euclidean distances."""
    k = min(k, max(1, int(index.ntotal)))
    raw, keys = index.search(q, k)
    # L2 indexes return squared distances; inner product on unit vectors returns the
    # cosine s, and |a - b| = sqrt(2 - 2s) there. Either way: one Euclidean unit.
    squared = 2.0 - 2.0 * raw if config.metric == "cosine" else raw
    dist = np.sqrt(np.maximum(squared, 0.0))
    return Neighbours(dist.astype(np.float32), keys)


def search_exact(q: Vectors, keys: NDArray[np.int64], vecs: Vectors, k: int) -> Neighbours:
    """The ``k`` nearest of ``vecs`` by brute force (before an IVF index is trained)."""
    if not len(vecs):
        return Neighbours(
            np.full((len(q), 1), np.inf, dtype=np.float32),
            np.full((len(q), 1), -1, dtype=np.int64),
        )
    k = min(k, len(vecs))
    d2 = faiss.pairwise_distances(q, vecs)
    order = np.argsort(d2, axis=1)[:, :k]
    dist = np.sqrt(np.maximum(np.take_along_axis(d2, order, axis=1), 0.0))
    return Neighbours(dist.astype(np.float32), keys[order])


@contextmanager
def one_thread() -> Iterator[None]:
    """Run Faiss on one OpenMP thread in this thread, then restore its setting."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def compressed_lists(samples: int) -> int:
    """IVF lists of a compressed index built on ``samples`` (0: no partition, every code is
    scanned): about 4*sqrt(N), a multiple of 64, with at least 39 samples a list to train on."""
    if not IVF_FROM or samples < IVF_FROM:
        return 0
    return max(64, min(int(4 * math.sqrt(samples)), samples // 39) // 64 * 64)


def compressed_train_size(samples: int) -> int:
    """How many of ``samples`` a compressed build trains on: enough for the codebooks, and
    for the IVF lists' k-means (40 a list) when there is a partition."""
    return min(samples, max(TRAIN_SAMPLE, 40 * compressed_lists(samples)))


def compressed_nprobe(lists: int) -> int:
    """Lists a partitioned compressed index scans per probe."""
    return max(1, -(-lists // IVF_SHARE))


def partition_lists(index: Any) -> int:
    """The IVF lists of ``index`` (0 for an index without a partition)."""
    inner = faiss.downcast_index(index)
    return int(inner.nlist) if isinstance(inner, faiss.IndexIVF) else 0


def train_compressed(sample: Vectors, lists: int = 0) -> Any:
    """An empty compressed index (L2, which ranks unit vectors as cosine does), trained on
    ``sample``; with ``lists``, its codes behind an IVF partition of that many lists (which
    keeps ids itself: no ``IndexIDMap``, whose removal assumes a flat index's renumbering)."""
    sample = np.ascontiguousarray(sample)
    index: Any
    if not lists:
        index = faiss.IndexIDMap(faiss.index_factory(DIM, COMPRESSED))
        index.train(sample)
        return index
    index = faiss.index_factory(DIM, f"IVF{lists},{COMPRESSED}")
    index.train(sample)
    faiss.extract_index_ivf(index).nprobe = compressed_nprobe(lists)
    return index


def search_reranked(
    index: Any, q: Vectors, k: int, candidates: int, vectors_of: Callable[[Keys], Vectors]
) -> Neighbours:
    """The ``k`` nearest keys: ``max(k, candidates)`` from the compressed ``index``, re-ranked at
    their true distances (``vectors_of`` reads their raw vectors). A probe's result only differs
    from exact search when its true neighbour was not among the candidates."""
    total = int(index.ntotal)
    if not total:
        return search_exact(q, np.empty(0, dtype=np.int64), np.empty((0, DIM), np.float32), k)
    _, keys = index.search(q, min(max(k, candidates), total))
    valid = keys >= 0
    keys = np.where(valid, keys, keys[valid][0] if valid.any() else 0)
    d2 = np.empty(keys.shape, dtype=np.float32)
    # A few probes at a time: their candidates' vectors stay in cache (a whole batch's are
    # tens of MB, and copying them costs more than the distances).
    for start in range(0, len(q), RERANK_BLOCK):
        block = slice(start, start + RERANK_BLOCK)
        vecs = vectors_of(keys[block].ravel()).reshape(*keys[block].shape, DIM)
        diff = vecs - q[block, None, :]
        d2[block] = np.einsum("qkd,qkd->qk", diff, diff)
    d2[~valid] = np.inf
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    dist = np.sqrt(np.take_along_axis(d2, order, axis=1))
    found = np.where(np.isfinite(dist), np.take_along_axis(keys, order, axis=1), -1)
    return Neighbours(dist.astype(np.float32), found)


def serialize(index: Any) -> NDArray[np.uint8]:
    """The index as bytes (what it costs in memory, roughly, and what a save writes)."""
    data: NDArray[np.uint8] = faiss.serialize_index(index)
    return data


def deserialize(data: NDArray[np.uint8], config: GalleryConfig) -> Any:
    """An index from :func:`serialize`'s bytes, with ``config``'s search parameters."""
    index = faiss.deserialize_index(data)
    apply_search_params(index, config)
    return index
