"""Compressed indexes for ``index="auto"``, built off the hot path.

A build is due when the gallery reaches ``exact_below`` samples, and again whenever it has grown
4x since the index in use was built (new people move the data the codebooks were trained on).
It runs on a thread, holding the gallery's read lock only while it copies vectors out of the
store (training and encoding run with no lock), so searches and changes go on meanwhile: on the
current index, exact or compressed. Then, under the write lock, the changes made since it
started are replayed onto the new index and it is swapped in:

* adds: sample ids only grow, so the samples added meanwhile are the stored ids above the last
  one the build read;
* removes: erased ids are journalled while the build runs, and removed from the new index.

Decisions stay what the input makes them, not the timing: before the swap the search is exact,
after it the candidates are re-ranked at their true distances, so both give the same nearest
samples unless a true neighbour was missing from the candidates (docs/benchmarks.md measures
how often).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from facestream.core.gallery import faiss_index
from facestream.core.gallery.locking import RWLock
from facestream.core.gallery.samples import SampleStore

CHUNK: Final = 65_536
"""Vectors copied out of the store per read lock: short holds, bounded copies."""
GROWTH: Final = 4
"""A compressed index is rebuilt once the gallery holds this many times what it was built on."""


@dataclass
class Build:
    """A compressed index being built: where it stops reading, and what changed meanwhile."""

    last_id: int
    """The highest sample id the build reads; samples added later are replayed at the swap."""
    removed: list[NDArray[np.int64]] = field(default_factory=list)
    """Sample ids erased while the build ran (removed from the new index before the swap)."""
    done: threading.Event = field(default_factory=threading.Event)


def is_due(samples: int, compressed_at: int, exact_below: int) -> bool:
    """Whether a gallery of ``samples`` wants a new compressed index, when the one it has was
    built on ``compressed_at`` samples (0: it has none, searches are exact)."""
    if not compressed_at:
        return samples >= exact_below
    return samples >= GROWTH * compressed_at


def build_compressed(build: Build, lock: RWLock, store: SampleStore) -> Any:
    """A compressed index of the stored samples up to ``build.last_id``, trained on a sample
    of them. Takes the read lock only to copy vectors out of ``store``."""
    with lock.read():
        upto = int(np.searchsorted(store.ids, build.last_id, side="right"))
        rng = np.random.default_rng(0)  # the same samples give the same codebooks
        picks = np.sort(rng.choice(upto, faiss_index.compressed_train_size(upto), replace=False))
        sample = store.vectors_of(store.ids[picks])
    index = faiss_index.train_compressed(sample, faiss_index.compressed_lists(upto))
    del sample
    cursor = -1
    while True:
        with lock.read():
            ids = store.ids
            start = int(np.searchsorted(ids, cursor, side="right"))
            stop = min(start + CHUNK, int(np.searchsorted(ids, build.last_id, side="right")))
            keys = ids[start:stop].copy()
            vecs = store.vectors_of(keys)
        if not keys.size:
            return index
        index.add_with_ids(vecs, keys)
        cursor = int(keys[-1])


def replay(build: Build, index: Any, store: SampleStore) -> None:
    """Bring ``index`` up to date with ``store``: add the samples stored after the build began,
    remove those erased while it ran. Call under the gallery's write lock."""
    ids = store.ids
    newer = ids[int(np.searchsorted(ids, build.last_id, side="right")) :]
    if newer.size:
        index.add_with_ids(store.vectors_of(newer), newer)
    for erased in build.removed:
        index.remove_ids(erased)
