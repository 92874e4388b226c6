"""Validated encodings, and the store of every raw sample the gallery holds.

The gallery keeps the raw samples beside the Faiss index: they are needed to train IVF on the
data, to recompute per-person means and to rebuild HNSW, which cannot remove in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facestream.core.gallery.types import DIM, GalleryError, Vectors


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


class SampleStore:
    """Every sample in id order (ids only grow), in arrays that grow by doubling: an append
    costs what it adds, not a copy of the whole gallery."""

    def __init__(self) -> None:
        self.size = 0
        self._ids = np.empty(0, dtype=np.int64)
        self._owners = np.empty(0, dtype=np.int64)
        self._vectors = np.empty((0, DIM), dtype=np.float32)

    @property
    def ids(self) -> NDArray[np.int64]:
        """Sample ids, ascending."""
        return self._ids[: self.size]

    @property
    def owners(self) -> NDArray[np.int64]:
        """The identity number of each sample."""
        return self._owners[: self.size]

    @property
    def vectors(self) -> Vectors:
        """The sample vectors, one row per id."""
        return self._vectors[: self.size]

    def append(self, ids: NDArray[np.int64], owners: NDArray[np.int64], vecs: Vectors) -> None:
        """Add samples whose ids are all above the stored ones."""
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

    def owners_of(self, keys: NDArray[np.int64]) -> NDArray[np.int64]:
        """The identity number that owns each sample id in ``keys`` (stored ids only)."""
        rows = np.searchsorted(self.ids, keys)
        found: NDArray[np.int64] = self.owners[np.minimum(rows, self.size - 1)]
        return found


def _grown(arr: NDArray[Any], capacity: int) -> NDArray[Any]:
    out = np.zeros((capacity, *arr.shape[1:]), dtype=arr.dtype)
    out[: len(arr)] = arr
    return out
