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
    """Every sample: ids, owners and rows in id order (ids only grow), the vectors in rows.

    The columns grow by doubling: an append costs what it adds, not a copy of the whole
    gallery. The vector rows are dense and unordered: a removal moves the last live rows into
    the erased ones and zeroes the tail, so an erased vector is overwritten, not left in spare
    capacity, and a removal moves as many vectors as it erases rather than copying every one
    held (40 MB to retire one visitor of a shard of 80k). This store keeps the rows in RAM;
    :class:`~facestream.core.gallery.vector_file.VectorFile` in a mapped file."""

    def __init__(self) -> None:
        self.size = 0
        self._ids = np.empty(0, dtype=np.int64)
        self._owners = np.empty(0, dtype=np.int64)
        self._rows = np.empty(0, dtype=np.int64)  # the row of each sample, in id order
        self._data: NDArray[np.float32] = np.empty((0, DIM), dtype=np.float32)

    @property
    def ids(self) -> NDArray[np.int64]:
        """Sample ids, ascending."""
        return self._ids[: self.size]

    @property
    def owners(self) -> NDArray[np.int64]:
        """The identity number of each sample."""
        return self._owners[: self.size]

    @property
    def rows(self) -> NDArray[np.int64]:
        """The row of each sample's vector, in id order."""
        return self._rows[: self.size]

    @property
    def vectors(self) -> Vectors:
        """The sample vectors in id order (a copy)."""
        return self._read(self.rows)

    def append(self, ids: NDArray[np.int64], owners: NDArray[np.int64], vecs: Vectors) -> None:
        """Add samples whose ids are all above the stored ones."""
        end = self.size + len(ids)
        if end > len(self._ids):
            self._grow(max(end, 2 * len(self._ids), 1024))
        self._ids[self.size : end] = ids
        self._owners[self.size : end] = owners
        # The rows are dense: the next free ones are those after the last sample.
        self._rows[self.size : end] = np.arange(self.size, end)
        self._data[self.size : end] = vecs
        self.size = end

    def replace(self, ids: NDArray[np.int64], owners: NDArray[np.int64], vecs: Vectors) -> None:
        """Hold exactly these samples (on load); every row held before is rewritten or
        zeroed."""
        self._data[:] = 0
        self.size = 0
        self.append(
            np.ascontiguousarray(ids, dtype=np.int64),
            np.ascontiguousarray(owners, dtype=np.int64),
            vecs,
        )
        self._flush()

    def remove_owners(self, numbers: NDArray[np.int64]) -> NDArray[np.int64]:
        """Erase every sample of the identities ``numbers``, in one pass over the columns;
        returns their ids."""
        keep = ~np.isin(self.owners, numbers)
        removed: NDArray[np.int64] = self.ids[~keep]
        if not removed.size:
            return removed
        rows, end = self.rows, self.size - removed.size
        freed = rows[~keep]
        # The live rows at or past the new end fill the freed rows below it (there are as many
        # of each); then everything past the end, erased vectors included, is zeroed.
        holes = np.sort(freed[freed < end])
        movers = np.flatnonzero(keep & (rows >= end))
        self._data[holes] = self._data[rows[movers]]
        rows[movers] = holes
        self._data[end : self.size] = 0
        self._flush()
        for column in (self._ids, self._owners, self._rows):
            column[:end] = column[: self.size][keep]
        self.size = end
        return removed

    def of_owner(self, number: int) -> Vectors:
        """The vectors of identity ``number`` (a copy)."""
        return self._read(self.rows[self.owners == number])

    def vectors_of(self, keys: NDArray[np.int64]) -> Vectors:
        """The vectors of these sample ids (stored ids only), in their order."""
        return self._read(self.rows[self.positions(keys)])

    def positions(self, keys: NDArray[np.int64]) -> NDArray[np.intp]:
        """Where each stored sample id in ``keys`` sits in :attr:`ids`."""
        return np.minimum(np.searchsorted(self.ids, keys), max(self.size - 1, 0))

    def owners_of(self, keys: NDArray[np.int64]) -> NDArray[np.int64]:
        """The identity number that owns each sample id in ``keys`` (stored ids only)."""
        found: NDArray[np.int64] = self.owners[self.positions(keys)]
        return found

    def nbytes(self) -> int:
        """Bytes this store holds in RAM."""
        return int(self._ids.nbytes + self._owners.nbytes + self._rows.nbytes + self._data.nbytes)

    def close(self) -> None:
        """Release what the store holds outside Python's heap (nothing, in RAM)."""

    def _read(self, rows: NDArray[np.int64]) -> Vectors:
        return np.asarray(self._data[rows])

    def _grow(self, capacity: int) -> None:
        self._ids = grown(self._ids, capacity)
        self._owners = grown(self._owners, capacity)
        self._rows = grown(self._rows, capacity)
        self._data = grown(self._data, capacity)

    def _flush(self) -> None:
        """Make the rows written so far durable where they live (nothing to do in RAM)."""


def grown(arr: NDArray[Any], capacity: int) -> NDArray[Any]:
    """``arr`` copied into ``capacity`` rows, zeros after it."""
    out = np.zeros((capacity, *arr.shape[1:]), dtype=arr.dtype)
    out[: len(arr)] = arr
    return out
