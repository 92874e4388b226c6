"""The store simulator on the real photos: the plan is a fair test of re-identification, and
its truth follows the sink's definitions."""

from __future__ import annotations

import csv
import itertools
import json
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import pytest

from facestream.core.engine import FaceEngine
from facestream.core.splits import person_split
from facestream.tools import simulate

CHAIN = simulate.Plan(
    stores=(
        simulate.StorePlan("paris", "Europe/Paris"),
        simulate.StorePlan("shanghai", "Asia/Shanghai"),
        simulate.StorePlan("ohio", "America/New_York"),
    ),
    days=3,
    members=6,
    returning_same_day=4,
    returning_later=6,
    once=8,
    midnight_share=0.3,
    seed=11,
)


@pytest.fixture(scope="module")
def chain(lfw: Path, engine: FaceEngine) -> simulate.Scenario:
    return simulate.build(lfw, CHAIN, engine)


def test_people_come_from_the_evaluation_half_only(chain: simulate.Scenario) -> None:
    names = {s.person.split(":", 1)[1] for s in chain.sightings}
    assert len(names) == 6 + 4 + 6 + 8
    assert {person_split(n) for n in names} == {"eval"}


def test_enrollment_photos_are_never_seen_at_a_visit(chain: simulate.Scenario) -> None:
    seen = {s.photo for s in chain.sightings}
    enrolled = [p for photos in chain.members.values() for p in photos]
    assert enrolled and not seen & set(enrolled)
    assert all(1 <= len(photos) <= 3 for photos in chain.members.values())


def test_each_visit_of_a_person_starts_with_another_photo(chain: simulate.Scenario) -> None:
    firsts: dict[str, list[Path]] = defaultdict(list)
    last: dict[str, object] = {}
    for s in sorted(chain.sightings, key=lambda s: s.at):
        previous = last.get(s.person)
        if previous is None or s.at - previous > simulate.VISIT_GAP:  # type: ignore[operator]
            firsts[s.person].append(s.photo)
        last[s.person] = s.at
    returning = {p: photos for p, photos in firsts.items() if len(photos) > 1}
    assert len(returning) >= 10
    for photos in returning.values():
        assert len(set(photos)) == len(photos)


def test_truth_counts_like_the_sink(chain: simulate.Scenario) -> None:
    days = list(chain.all_days())
    assert {d.store for d in days} == {"paris", "shanghai", "ohio"}
    for d in days:
        assert d.new + d.returning == d.uv <= d.pv
    assert sum(d.returning for d in days) > 0 and any(d.members for d in days)
    # A visit that starts before local midnight and ends after it counts on its first day.
    crossing = 0
    for store in chain.stores:
        zone = chain.zone(store.store_id)
        for person in {s.person for s in chain.sightings if s.store_id == store.store_id}:
            times = sorted(
                s.at for s in chain.sightings if s.person == person and s.store_id == store.store_id
            )
            for a, b in itertools.pairwise(times):
                if (
                    b - a <= simulate.VISIT_GAP
                    and a.astimezone(zone).date() != b.astimezone(zone).date()
                ):
                    crossing += 1
                    start_day = a.astimezone(zone).date()
                    assert chain.truth(store.store_id, start_day).pv > 0
    assert crossing > 0, "the plan should exercise visits across midnight"


def test_files_round_trip(chain: simulate.Scenario, tmp_path: Path) -> None:
    members, manifest, truth_path = chain.write(tmp_path)
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == len(chain.sightings)
    assert set(rows[0]) == {"path", "captured_at", "camera", "store"}
    assert all(Path(r["path"]).is_file() for r in rows)
    truth = json.loads(truth_path.read_text())
    assert truth["days"] == [d.as_dict() for d in chain.all_days()]
    assert sorted(p.name for p in members.iterdir()) == sorted(chain.members)
    # Links, not copies: nothing of the data set is duplicated.
    assert all(f.is_symlink() for f in members.rglob("*.jpg"))


def test_the_same_seed_gives_the_same_plan(lfw: Path, engine: FaceEngine) -> None:
    small = simulate.Plan(members=2, returning_same_day=1, returning_later=1, once=2, seed=3)
    a, b = simulate.build(lfw, small, engine), simulate.build(lfw, small, engine)
    assert a.sightings == b.sightings and a.members == b.members
    assert simulate.build(lfw, simulate.Plan(start=date(2026, 1, 1)), engine).sightings[
        0
    ].at.date() - date(2026, 1, 1) < timedelta(days=3)


def test_asking_for_too_many_people_says_so(lfw: Path, engine: FaceEngine) -> None:
    with pytest.raises(simulate.NotEnoughPeople):
        simulate.build(lfw, simulate.Plan(members=500), engine)
