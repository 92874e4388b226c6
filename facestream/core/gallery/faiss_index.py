"""Faiss internals: which index to build, how to train it, how to search it, its parameters.

Every vector keeps a stable id: Flat and HNSW sit behind an ``IndexIDMap2``; IVF indexes keep
ids natively. Distances leave this module in dlib's Euclidean unit (its own tolerance is 0.6),
whatever the index: Faiss L2 indexes return squared distances and are converted here, in one
place.
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from facestream.core.gallery.types import DIM, GalleryConfig, Neighbours, Vectors


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
        inner = faiss.IndexFlatIP(DIM) if ip else faiss.IndexFlatL2(DIM)
    return faiss.IndexIDMap2(inner)


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


def serialize(index: Any) -> NDArray[np.uint8]:
    """The index as bytes (what it costs in memory, roughly, and what a save writes)."""
    data: NDArray[np.uint8] = faiss.serialize_index(index)
    return data


def deserialize(data: NDArray[np.uint8], config: GalleryConfig) -> Any:
    """An index from :func:`serialize`'s bytes, with ``config``'s search parameters."""
    index = faiss.deserialize_index(data)
    apply_search_params(index, config)
    return index
