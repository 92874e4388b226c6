"""The scale table (``facestream.core.scales``): every entry it holds, after any sequence of
changes to the gallery and its cohort, equals the entry computed afresh on the galleries as
they are; and a change too large to follow starts it afresh.

The encodings are synthetic people (a centre, and samples scattered around it), some in crowded
groups: what is compared is the table kept up to date against the table computed again, on the
same exact searches, not a face decision (tests/core/test_policy.py checks the decisions on
photos). A small ``top_k`` makes the searches' candidate lists end early, so that the entries
they cannot vouch for are dropped and computed again.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from numpy.typing import NDArray

from facestream.core.gallery import Gallery, GalleryConfig, Identity
from facestream.core.gallery.gallery import JOURNAL, JOURNAL_IDENTITIES
from facestream.core.policy import Judge, Policy
from facestream.core.scales import ScaleTable


def _people(rng: np.random.Generator, n: int) -> NDArray[np.float32]:
    """Centres of norm about 1.4 (a face's), every fourth one close to another (a crowd)."""
    v = rng.standard_normal((n, 128)).astype(np.float32)
    centres: NDArray[np.float32] = v / np.linalg.norm(v, axis=1, keepdims=True) * 1.4
    for i in range(3, n, 4):
        centres[i] = centres[i - 1] + rng.standard_normal(128).astype(np.float32) * 0.03
    return centres


def _photo(rng: np.random.Generator, centre: NDArray[np.float32]) -> NDArray[np.float32]:
    noise = rng.standard_normal(128).astype(np.float32) * 0.025
    return (centre + noise).astype(np.float32)


def _fresh(table: ScaleTable, identity_id: str) -> float | None:
    """The entry's scale computed on the galleries as they are, with no history."""
    entry = ScaleTable(table.k, table.galleries)._compute([identity_id]).get(identity_id)
    return None if entry is None else table._u(entry)


def _check(table: ScaleTable) -> int:
    table._sync()
    for identity_id in list(table._entries):
        kept = table._u(table._entries[identity_id])
        fresh = _fresh(table, identity_id)
        if kept is None or fresh is None:
            assert kept == fresh, identity_id
        else:
            assert kept == pytest.approx(fresh, rel=1e-5, abs=1e-6), identity_id
    return len(table._entries)


@pytest.mark.parametrize("top_k", [3, 10])
def test_entries_stay_what_a_fresh_computation_gives(top_k: int) -> None:
    rng = np.random.default_rng(top_k)
    config = GalleryConfig(top_k=top_k)
    visitors, members = Gallery(config), Gallery(config)
    judge = Judge(Policy(k=2, max_distance=10.0), visitors, [members])
    table = judge.scales
    people = _people(rng, 400)
    members.add_many(
        (Identity(f"m{i}"), [_photo(rng, people[i]) for _ in range(2)]) for i in range(40)
    )
    next_person, held = 40, 0
    for step in range(600):
        op = rng.random()
        names = [i.id for i in visitors.identities()]
        if op < 0.35 or not names:
            # A face judged, then minted (as the matcher does with a stranger).
            v = _photo(rng, people[next_person % len(people)])
            next_person += 1
            judge.judge(v)
            visitors.add(Identity(f"v{step}"), v)
        elif op < 0.6:
            # A returning visitor judged, then taught the sample.
            name = names[int(rng.integers(len(names)))]
            v = _photo(rng, visitors.samples(name)[0])
            judge.judge(v)
            visitors.add(Identity(name), v)
        elif op < 0.7:
            members.add(Identity(f"m{step}"), _photo(rng, people[int(rng.integers(len(people)))]))
        elif op < 0.8:
            visitors.remove(names[int(rng.integers(len(names)))])
        elif op < 0.85:
            gone = [i.id for i in members.identities()]
            members.remove(gone[int(rng.integers(len(gone)))])
        else:
            table.scale(names[int(rng.integers(len(names)))])
        if step % 25 == 0:
            table.fill()
        if step % 5 == 0:
            held = max(held, _check(table))
    assert held > 50  # the check looked at a table that held something
    assert table.stats["dropped"] > 0  # and at entries the changes made it drop
    assert _check(table) >= 0


def test_a_minted_visitor_costs_no_search() -> None:
    rng = np.random.default_rng(5)
    people = _people(rng, 60)
    visitors, members = Gallery(), Gallery()
    members.add_many((Identity(f"m{i}"), _photo(rng, people[i])) for i in range(30))
    judge = Judge(Policy(k=2, max_distance=10.0), visitors, [members])
    for i in range(30, 50):
        v = _photo(rng, people[i])
        judge.judge(v)
        visitors.add(Identity(f"v{i}"), v)
    computed = judge.scales.stats["computed"]
    for i in range(30, 50):
        assert judge.scales.scale(f"v{i}") == pytest.approx(_fresh(judge.scales, f"v{i}"))
    assert judge.scales.stats["computed"] == computed  # every one was made from its own face
    assert judge.scales.stats["cached"] >= 20


def test_changes_too_large_to_follow_start_afresh() -> None:
    rng = np.random.default_rng(9)
    people = _people(rng, 3 * JOURNAL_IDENTITIES + JOURNAL + 50)
    gallery = Gallery()
    gallery.add_many((Identity(f"p{i}"), _photo(rng, people[i])) for i in range(20))
    table = ScaleTable(2, [gallery])
    assert table.fill() == 20 and len(table) == 20
    # A bulk load: more identities than the journal names.
    bulk = range(20, 21 + JOURNAL_IDENTITIES)
    gallery.add_many((Identity(f"p{i}"), _photo(rng, people[i])) for i in bulk)
    assert gallery.changes_since(0) is not None
    table._sync()
    assert len(table) == 0 and table.stats["reset"] == 20
    table.fill()
    assert _check(table) == len(gallery)
    # More changes than the journal keeps, between two looks.
    first = len(gallery)
    for i in range(first, first + JOURNAL + 1):
        gallery.add(Identity(f"p{i}"), _photo(rng, people[i]))
    before = gallery.generation - JOURNAL - 1
    assert gallery.changes_since(before) is None
    table._sync()
    assert len(table) == 0
    assert table.scale("p0") == pytest.approx(_fresh(table, "p0"))


def test_fill_stops_when_told() -> None:
    rng = np.random.default_rng(11)
    people = _people(rng, 50)
    gallery = Gallery()
    gallery.add_many((Identity(f"p{i}"), _photo(rng, people[i])) for i in range(50))
    table = ScaleTable(2, [gallery])
    stop = threading.Event()
    stop.set()
    assert table.fill(stop) == 0
    assert table.fill(chunk=7) == 50
    assert all(not math.isnan(table.scale(f"p{i}") or 0.0) for i in range(50))
    assert table.stats["cached"] == 50
