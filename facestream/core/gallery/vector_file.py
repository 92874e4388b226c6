"""The raw samples of an ``index="auto"`` gallery, in a file mapped into memory.

A compressed index holds 32 bytes per sample; the raw float32 vector (512 bytes) is only needed
to re-rank a probe's few hundred candidates at their true distances, to train, and to return a
person's samples. In a file they are left to the page cache: the kernel keeps the pages that
searches touch and can drop the others under memory pressure, so the process's own memory per
sample is the index plus three int64 columns here (id, owner, row in the file).

The file is anonymous (created unlinked, it goes with the process) and dense: a removal moves
the last rows into the erased ones and zeroes the tail, so an erased vector is overwritten on
disk, not just forgotten, at a cost of what is removed rather than of the whole file.
"""

from __future__ import annotations

import tempfile

import numpy as np
from numpy.typing import NDArray

from facestream.core.gallery.samples import SampleStore, grown
from facestream.core.gallery.types import DIM, Vectors


class VectorFile(SampleStore):
    """A :class:`SampleStore` whose vectors live in a file in ``directory`` (the system's
    temporary directory when empty; it should be a disk, not a tmpfs, or nothing is saved)."""

    def __init__(self, directory: str = "") -> None:
        super().__init__()
        self._rows = np.empty(0, dtype=np.int64)  # file row of each sample, in id order
        # Closed with the store (the file object's finaliser): it lives as long as the gallery.
        self._file = tempfile.TemporaryFile(dir=directory or None, prefix="gallery-vectors.")  # noqa: SIM115
        self._map: np.memmap | None = None  # mmap cannot map an empty file

    @property
    def rows(self) -> NDArray[np.int64]:
        """The file row of each sample, in id order."""
        return self._rows[: self.size]

    @property
    def vectors(self) -> Vectors:
        """The sample vectors in id order, read from the file (a copy)."""
        return self._read(self.rows)

    def fileno(self) -> int:
        """The file's descriptor (to check what it holds)."""
        return self._file.fileno()

    def replace(self, ids: NDArray[np.int64], owners: NDArray[np.int64], vecs: Vectors) -> None:
        """Hold exactly these samples; every row of the file is rewritten or zeroed."""
        if self._map is not None:
            self._map[:] = 0
        self.size = 0
        self.append(
            np.ascontiguousarray(ids, dtype=np.int64),
            np.ascontiguousarray(owners, dtype=np.int64),
            vecs,
        )
        self._flush()

    def remove_owner(self, number: int) -> NDArray[np.int64]:
        """Erase every sample of identity ``number`` from the file; returns their ids."""
        keep = self.owners != number
        removed: NDArray[np.int64] = self.ids[~keep]
        if not removed.size:
            return removed
        assert self._map is not None
        rows, end = self.rows, self.size - removed.size
        freed = rows[~keep]
        # The live rows at or past the new end fill the freed rows below it (there are as many
        # of each); then everything past the end, erased vectors included, is zeroed.
        holes = np.sort(freed[freed < end])
        movers = np.flatnonzero(keep & (rows >= end))
        self._map[holes] = self._map[rows[movers]]
        rows[movers] = holes
        self._map[end : self.size] = 0
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

    def nbytes(self) -> int:
        """Bytes this store holds in RAM: its columns, not the mapped file."""
        return int(self._ids.nbytes + self._owners.nbytes + self._rows.nbytes)

    def _read(self, rows: NDArray[np.int64]) -> Vectors:
        if self._map is None:
            return np.empty((0, DIM), dtype=np.float32)
        return np.asarray(self._map[rows])

    def _grow(self, capacity: int) -> None:
        self._ids = grown(self._ids, capacity)
        self._owners = grown(self._owners, capacity)
        self._rows = grown(self._rows, capacity)
        self._map = None
        self._file.truncate(capacity * DIM * 4)  # the new rows read as zeros
        self._map = np.memmap(self._file, dtype=np.float32, mode="r+", shape=(capacity, DIM))

    def _put(self, start: int, vecs: Vectors) -> None:
        # The file is dense: the next free rows are the ones after the last sample.
        end = start + len(vecs)
        assert self._map is not None
        self._rows[start:end] = np.arange(start, end)
        self._map[start:end] = vecs

    def _flush(self) -> None:
        if self._map is not None:
            self._map.flush()
