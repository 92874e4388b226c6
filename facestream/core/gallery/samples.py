"""Validated encodings, and the store of every raw sample the gallery holds.

The gallery keeps the raw samples beside the Faiss index: they are needed to train IVF on the
data, to recompute per-person means, to rebuild HNSW, which cannot remove in place, and (for
``index="auto"``) to re-rank compressed candidates at their true distances. This store keeps
them in RAM; :class:`~facestream.core.gallery.vector_file.VectorFile` keeps them in a file.
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
            self._grow(max(end, 2 * len(self._ids), 1024))
        self._ids[self.size : end] = ids
        self._owners[self.size : end] = owners
        self._put(self.size, vecs)
        self.size = end

    def replace(self, ids: NDArray[np.int64], owners: NDArray[np.int64], vecs: Vectors) -> None:
        """Hold exactly these samples (after a removal, or on load). The old arrays are dropped,
        so no erased vector lingers in spare capacity."""
        self._ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._owners = np.ascontiguousarray(owners, dtype=np.int64)
        self._vectors = np.ascontiguousarray(vecs, dtype=np.float32)
        self.size = len(self._ids)

    def remove_owner(self, number: int) -> NDArray[np.int64]:
        """Erase every sample of identity ``number``; returns their ids."""
        keep = self.owners != number
        removed: NDArray[np.int64] = self.ids[~keep]
        self.replace(self.ids[keep], self.owners[keep], self.vectors[keep])
        return removed

    def of_owner(self, number: int) -> Vectors:
        """The vectors of identity ``number`` (a copy)."""
        found: Vectors = self.vectors[self.owners == number]
        return found

    def vectors_of(self, keys: NDArray[np.int64]) -> Vectors:
        """The vectors of these sample ids (stored ids only), in their order."""
        found: Vectors = self.vectors[self.positions(keys)]
        return found

    def positions(self, keys: NDArray[np.int64]) -> NDArray[np.intp]:
        """Where each stored sample id in ``keys`` sits in :attr:`ids`."""
        return np.minimum(np.searchsorted(self.ids, keys), max(self.size - 1, 0))

    def owners_of(self, keys: NDArray[np.int64]) -> NDArray[np.int64]:
        """The identity number that owns each sample id in ``keys`` (stored ids only)."""
        found: NDArray[np.int64] = self.owners[self.positions(keys)]
        return found

    def nbytes(self) -> int:
        """Bytes this store holds in RAM."""
        return int(self._ids.nbytes + self._owners.nbytes + self._vectors.nbytes)

    def close(self) -> None:
        """Release what the store holds outside Python's heap (nothing, in RAM)."""

    def _grow(self, capacity: int) -> None:
        self._ids = grown(self._ids, capacity)
        self._owners = grown(self._owners, capacity)
        self._vectors = grown(self._vectors, capacity)

    def _put(self, start: int, vecs: Vectors) -> None:
        self._vectors[start : start + len(vecs)] = vecs


def grown(arr: NDArray[Any], capacity: int) -> NDArray[Any]:
    """``arr`` copied into ``capacity`` rows, zeros after it."""
    out = np.zeros((capacity, *arr.shape[1:]), dtype=arr.dtype)
    out[: len(arr)] = arr
    return out
