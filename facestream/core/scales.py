"""The neighbourhood scales of a gallery's identities, kept while the galleries change.

The normalised policy (:mod:`facestream.core.policy`) divides a match's distance by the scale
``u_k`` of the matched identity: the distance from its samples to its k-th nearest *other*
identity, in the gallery and its cohorts. Computing one searches each of the identity's samples
in every one of those galleries: at 1e6 member samples, three compressed searches, more than
the rest of a decision. A cache that is thrown away whenever a gallery changes is little help:
a visitor shard changes at every visitor minted, and its cohort (the members) is the large one.

A :class:`ScaleTable` keeps each identity's *entry*, its k nearest other identities with their
distances, and follows the galleries' journals (:meth:`Gallery.changes_since`) instead:

* **samples added** to identity ``o`` of any gallery. Every other entry ``j`` is offered ``o``
  at ``d(o, j)``, and keeps it when ``o`` is now nearer than its k-th neighbour. Those ``j``
  are found by searching ``o``'s samples in the gallery: nearness is symmetric, so every ``j``
  with ``d(o, j) < u_k(j)`` is among ``o``'s candidates, unless the candidate list ends before
  ``u_k(j)``; such entries (found on a max-heap of ``u``) are dropped, to be computed again when
  needed. ``o``'s own entry (the gallery's identities): merged with the new sample's neighbours
  when the judge has just searched that sample (the face that minted a visitor or taught it a
  sample, :meth:`remember`), otherwise dropped.
* **an identity removed**: its own entry and every entry that names it, dropped.
* **a change too large to follow** (a bulk load, or more changes than the journal holds): every
  entry dropped.

So an entry, while it is held, is what computing it afresh on the galleries as they are would
give (``tests/core/test_scales.py`` checks that after random changes, on real encodings). A
fresh visitor's scale costs no search (its minting face's neighbours are its own), and
:meth:`fill` computes every identity's entry in bulk, in a background thread, so that a large
member gallery's decisions stop paying for them (docs/pipeline-benchmarks.md).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from facestream.core.gallery import Decision, Gallery

Key = tuple[int, str]
"""A neighbour: the index of its gallery (0: the judged gallery, then the cohorts) and its id.
Ids are per gallery, so a cohort person who shares an id with someone in the gallery counts
apart."""

REMEMBERED: Final = 32
"""Probes whose neighbours a table keeps for the sample they may become: the latest ones judged
since the galleries last changed (a probe becomes a sample right after it is judged, and its
neighbours are of use only if nothing changed in between); by a digest of the encoding, with
the neighbours' ids and distances: no encoding is kept. A matcher holds a table per store
searched, so what each keeps must stay small."""
FILL_CHUNK: Final = 256
"""Identities computed per search batch by :meth:`ScaleTable.fill`. The batch holds the
gallery's read lock, and a change waiting for it holds up every search after it: 256 members
of 3 samples are about 2 s of searching at 1e6 samples."""


@dataclass(slots=True)
class _Entry:
    nearest: tuple[tuple[float, Key], ...]
    """The k nearest other identities, nearest first (fewer when the galleries hold fewer)."""
    samples: int
    """How many samples of the identity it was computed from."""
    seq: int = 0
    """Which heap item is this entry's (older items of the same identity are stale)."""


@dataclass(frozen=True)
class _Searched:
    """A probe's neighbours as the judge found them (at the table's ``_searched_at``)."""

    nearest: dict[Key, float]
    bounds: tuple[float, ...]
    """Per gallery: no neighbour missing from ``nearest`` is nearer than this (inf: none is
    missing)."""


class ScaleTable:
    """``u_k`` of the identities of ``galleries[0]``, normalised against ``galleries[1:]``."""

    def __init__(self, k: int, galleries: Sequence[Gallery]) -> None:
        self.k = k
        self.galleries = tuple(galleries)
        self.stats: Counter[str] = Counter()
        """Lookups ``cached`` and ``computed``; entries ``filled``, ``reset`` and ``dropped``
        (and ``dropped_<why>``: ``gone``, ``neighbour_gone``, ``own_sample`` (a sample whose
        neighbours were not at hand), ``own_sample_unreached``, ``unreached`` (a neighbour the
        search could not vouch for))."""
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._holders: dict[Key, list[str]] = {}
        """Neighbour -> the identities whose entry names it."""
        self._heap: list[tuple[float, int, str]] = []
        """(-u_k, seq, identity): the entries with the widest neighbourhoods first."""
        self._seq = 0
        self._generations = self.generations()
        """The galleries' state the entries reflect."""
        self._searched: OrderedDict[bytes, _Searched] = OrderedDict()
        self._searched_at: tuple[int, ...] = ()
        """The galleries' state the remembered probes were judged at."""

    def __len__(self) -> int:
        return len(self._entries)

    # -- lookups -----------------------------------------------------------------------------

    def scale(self, identity_id: str) -> float | None:
        """``u_k`` of an identity of the gallery (None while fewer than k others exist)."""
        with self._lock:
            self._sync()
            entry = self._entries.get(identity_id)
            if entry is not None:
                self.stats["cached"] += 1
                return self._u(entry)
            generations = self._generations
        computed = self._compute([identity_id]).get(identity_id)
        if computed is None:
            return None
        with self._lock:
            self._sync()
            if self._generations == generations and identity_id not in self._entries:
                self._store(identity_id, computed)
            self.stats["computed"] += 1
        return self._u(computed)

    def remember(
        self, vector: NDArray[Any], generations: tuple[int, ...], found: Sequence[Decision | None]
    ) -> None:
        """Keep what the judge found for a probe (``found``: its decision in each gallery, None
        for an empty one), searched when the galleries were at ``generations``: if the probe
        becomes a sample of the gallery (a visitor minted, a sample learned), its entry is
        made from this rather than searched again."""
        nearest: dict[Key, float] = {}
        bounds = []
        for source, decision in enumerate(found):
            if decision is None:
                bounds.append(math.inf)
                continue
            for c in decision.candidates:
                key = (source, c.identity.id)
                nearest[key] = min(c.distance, nearest.get(key, math.inf))
            bounds.append(_bound(decision, self.galleries[source]))
        with self._lock:
            self._sync()
            if generations != self._generations:
                return  # a gallery changed since the search: of no use for the next change
            if self._searched_at != generations:
                self._searched.clear()  # judged before the latest change: of no use any more
                self._searched_at = generations
            self._searched[_probe_key(vector)] = _Searched(nearest, tuple(bounds))
            while len(self._searched) > REMEMBERED:
                self._searched.popitem(last=False)

    def generations(self) -> tuple[int, ...]:
        """The galleries' state now (what :meth:`remember` wants with a search made now)."""
        return tuple(g.generation for g in self.galleries)

    def fill(
        self,
        stop: threading.Event | None = None,
        chunk: int = FILL_CHUNK,
        ids: Sequence[str] | None = None,
    ) -> int:
        """Compute the entry of every identity of the gallery (or of ``ids``) that has none,
        ``chunk`` at a time (searches run with no lock held: lookups go on meanwhile). A chunk
        computed while a gallery changed is not kept (its identities are computed when looked
        up). Returns the entries added; stops early when ``stop`` is set."""
        added = 0
        if ids is None:
            ids = [identity.id for identity in self.galleries[0].identities()]
        for start in range(0, len(ids), chunk):
            if stop is not None and stop.is_set():
                break
            with self._lock:
                self._sync()
                wanted = [i for i in ids[start : start + chunk] if i not in self._entries]
                generations = self._generations
            if not wanted:
                continue
            computed = self._compute(wanted)
            with self._lock:
                self._sync()
                if self._generations != generations:
                    continue
                for identity_id, entry in computed.items():
                    if identity_id not in self._entries:
                        self._store(identity_id, entry)
                        added += 1
        self.stats["filled"] += added
        return added

    def clear(self) -> None:
        """Forget every entry (they are computed again as they are looked up)."""
        with self._lock:
            self._reset()

    # -- following the galleries -------------------------------------------------------------

    def _sync(self) -> None:
        """Apply every change the galleries journalled since the entries were last brought up
        to date (under the lock)."""
        if self.generations() == self._generations:
            return
        done = list(self._generations)
        for source, gallery in enumerate(self.galleries):
            if gallery.generation == done[source]:
                continue
            changes = gallery.changes_since(done[source])
            if changes is None or any(c.everything for c in changes):
                self._reset()
                return
            for change in changes:
                for identity_id in change.removed:
                    self._removed((source, identity_id))
                self._generations = tuple(done)  # what a remembered probe is checked against
                for identity_id in change.added:
                    self._added(source, identity_id, change.generation)
                done[source] = change.generation
        self._generations = tuple(done)

    def _reset(self) -> None:
        self.stats["reset"] += len(self._entries)
        self._entries.clear()
        self._holders.clear()
        self._heap.clear()
        self._searched.clear()
        self._generations = self.generations()

    def _removed(self, key: Key) -> None:
        if key[0] == 0:
            self._drop(key[1], "gone")
        for holder in self._holders.pop(key, []):
            self._drop(holder, "neighbour_gone")

    def _added(self, source: int, identity_id: str, generation: int) -> None:
        gallery = self.galleries[source]
        if identity_id not in gallery:
            return  # removed since: its removal is further on in the journal
        samples = gallery.samples(identity_id)
        searched = self._searched.get(_probe_key(samples[-1]))
        before = (*self._generations[:source], generation - 1, *self._generations[source + 1 :])
        fresh = searched is not None and self._searched_at == before
        key = (source, identity_id)
        if source == 0:
            self._own_sample(identity_id, len(samples), searched if fresh else None)
        if len(self._entries) <= (source == 0 and identity_id in self._entries):
            return  # no other entry to update: nothing to search for
        # Every other entry: offered the identity where it came nearer than its k-th neighbour.
        if fresh and len(samples) == 1:
            assert searched is not None
            offers = {k[1]: d for k, d in searched.nearest.items() if k[0] == 0}
            bound = searched.bounds[0]
        else:
            offers, bound = {}, math.inf
            if len(self.galleries[0]):
                for decision in self.galleries[0].identify_batch(samples):
                    for c in decision.candidates:
                        offers[c.identity.id] = min(c.distance, offers.get(c.identity.id, math.inf))
                    bound = min(bound, _bound(decision, self.galleries[0]))
        for holder, distance in offers.items():
            if not (source == 0 and holder == identity_id):
                self._offer(holder, key, distance)
        self._drop_wider_than(bound)

    def _own_sample(self, identity_id: str, samples: int, searched: _Searched | None) -> None:
        """A gallery identity gained a sample: merge the sample's neighbours into its entry
        when they are known (``searched``) and it is the entry's one new sample, else drop."""
        entry = self._entries.get(identity_id)
        if searched is None or (entry is not None and entry.samples != samples - 1):
            self._drop(identity_id, "own_sample")
            return
        if entry is None and samples != 1:
            return  # not held, and more than this sample to search: left to a lookup
        nearest = dict((key, d) for d, key in (entry.nearest if entry else []))
        for key, d in searched.nearest.items():
            if key != (0, identity_id):
                nearest[key] = min(d, nearest.get(key, math.inf))
        ranked = self._ranked(nearest)
        if len(ranked) == self.k and ranked[-1][0] > min(searched.bounds):
            # Its k-th neighbour could be one the probe's candidate lists did not reach.
            self._drop(identity_id, "own_sample_unreached")
            return
        self._store(identity_id, _Entry(ranked, samples))

    def _offer(self, holder: str, key: Key, distance: float) -> None:
        entry = self._entries.get(holder)
        if entry is None:
            return
        nearest = entry.nearest
        if len(nearest) == self.k and distance >= nearest[-1][0]:
            return
        merged = {k: d for d, k in nearest}
        if distance >= merged.get(key, math.inf):
            return
        merged[key] = distance
        self._store(holder, _Entry(self._ranked(merged), entry.samples))

    def _drop_wider_than(self, bound: float) -> None:
        """Drop the entries whose k-th neighbour is farther than ``bound``: a neighbour the
        search did not reach could be nearer than it."""
        heap = self._heap
        while heap and -heap[0][0] > bound:
            _, seq, identity_id = heapq.heappop(heap)
            entry = self._entries.get(identity_id)
            if entry is not None and entry.seq == seq:
                self._drop(identity_id, "unreached")

    # -- entries -----------------------------------------------------------------------------

    def _ranked(self, found: dict[Key, float]) -> tuple[tuple[float, Key], ...]:
        """The k nearest of ``found`` (neighbour -> distance), nearest first."""
        return tuple(sorted((d, key) for key, d in found.items())[: self.k])

    def _u(self, entry: _Entry) -> float | None:
        return entry.nearest[self.k - 1][0] if len(entry.nearest) >= self.k else None

    def _store(self, identity_id: str, entry: _Entry) -> None:
        old = self._entries.get(identity_id)
        if old is not None:
            self._unhold(identity_id, old)
        self._seq += 1
        entry.seq = self._seq
        self._entries[identity_id] = entry
        for _, key in entry.nearest:
            self._holders.setdefault(key, []).append(identity_id)
        u = self._u(entry)
        heapq.heappush(self._heap, (-(u if u is not None else math.inf), entry.seq, identity_id))
        if len(self._heap) > 4 * len(self._entries) + 64:
            self._heap = [(-(self._u(e) or math.inf), e.seq, i) for i, e in self._entries.items()]
            heapq.heapify(self._heap)

    def _drop(self, identity_id: str, reason: str) -> None:
        """Forget an entry; counted in ``stats`` with its ``reason``."""
        entry = self._entries.pop(identity_id, None)
        if entry is not None:
            self._unhold(identity_id, entry)
            self.stats["dropped"] += 1
            self.stats[f"dropped_{reason}"] += 1

    def _unhold(self, identity_id: str, entry: _Entry) -> None:
        for _, key in entry.nearest:
            holders = self._holders.get(key)
            if holders is not None and identity_id in holders:
                holders.remove(identity_id)
                if not holders:
                    del self._holders[key]

    def _compute(self, ids: Iterable[str]) -> dict[str, _Entry]:
        """Entries searched afresh (no lock held: the searches are the galleries' own)."""
        owners: list[str] = []
        blocks = []
        for identity_id in ids:
            if identity_id in self.galleries[0]:
                block = self.galleries[0].samples(identity_id)
                owners += [identity_id] * len(block)
                blocks.append(block)
        if not blocks:
            return {}
        samples = np.concatenate(blocks)
        nearest: dict[str, dict[Key, float]] = {i: {} for i in dict.fromkeys(owners)}
        for source, gallery in enumerate(self.galleries):
            if not len(gallery):
                continue
            for owner, decision in zip(owners, gallery.identify_batch(samples), strict=True):
                mine = nearest[owner]
                for c in decision.candidates:
                    if source == 0 and c.identity.id == owner:
                        continue
                    key = (source, c.identity.id)
                    mine[key] = min(c.distance, mine.get(key, math.inf))
        counts = Counter(owners)
        return {
            owner: _Entry(self._ranked(found), counts[owner]) for owner, found in nearest.items()
        }


def _probe_key(vector: NDArray[Any]) -> bytes:
    """A digest of the encoding: what the table keeps of a probe is not the encoding itself
    (the probes of an API's /recognize never become samples, and must not stay in memory)."""
    raw = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1).tobytes()
    return hashlib.blake2b(raw, digest_size=16).digest()


def _bound(decision: Decision, gallery: Gallery) -> float:
    """How near an identity missing from ``decision``'s candidates could be: the last
    candidate's distance, or inf when every identity of ``gallery`` is a candidate."""
    if len(decision.candidates) >= len(gallery) or not decision.candidates:
        return math.inf
    return decision.candidates[-1].distance
