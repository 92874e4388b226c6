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

from facestream.core.gallery.samples import SampleStore, grown
from facestream.core.gallery.types import DIM


class VectorFile(SampleStore):
    """A :class:`SampleStore` whose vectors live in a file in ``directory`` (the system's
    temporary directory when empty; it should be a disk, not a tmpfs, or nothing is saved)."""

    def __init__(self, directory: str = "") -> None:
        super().__init__()
        # Closed with the store (the file object's finaliser): it lives as long as the gallery.
        self._file = tempfile.TemporaryFile(dir=directory or None, prefix="gallery-vectors.")  # noqa: SIM115
        # Until the first append the vectors are an empty array: mmap cannot map an empty file.

    def fileno(self) -> int:
        """The file's descriptor (to check what it holds)."""
        return self._file.fileno()

    def nbytes(self) -> int:
        """Bytes this store holds in RAM: its columns, not the mapped file."""
        return int(self._ids.nbytes + self._owners.nbytes + self._rows.nbytes)

    def _grow(self, capacity: int) -> None:
        self._ids = grown(self._ids, capacity)
        self._owners = grown(self._owners, capacity)
        self._rows = grown(self._rows, capacity)
        self._data = np.empty((0, DIM), dtype=np.float32)  # unmapped before the file grows
        self._file.truncate(capacity * DIM * 4)  # the new rows read as zeros
        self._data = np.memmap(self._file, dtype=np.float32, mode="r+", shape=(capacity, DIM))

    def _flush(self) -> None:
        if isinstance(self._data, np.memmap):
            self._data.flush()
