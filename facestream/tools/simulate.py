"""A realistic simulated chain of stores: who walks in where and when, with the truth.

Built from a folder of photos in the LFW layout (``DIR/<Name>/*.jpg``), it plans one or more
stores in their own time zones over one or more days and writes:

* ``members/<Name>/``: the enrollment photos of the members (links to the originals, 1 to 3 each);
* ``manifest.csv``: ``path,captured_at,camera,store``, one row per camera sighting, in time
  order, ready for ``facestream eval store`` or ``facestream replay``;
* ``truth.json``: every sighting with the person it shows, and each store's daily PV, UV, new,
  returning, members and dwell computed from the plan with the sink's own definitions.

What makes it a test of re-identification rather than of image copies: every sighting of a
person uses a different photo of them where they have enough (photos are spent across visits
first, then across the cameras of one visit), and a member's enrollment photos are never used
at a visit. Strangers come once, come back the same day, or come back on later days; each visit
passes the entrance camera and often an aisle or the checkout a few minutes later; some visits
start just before the store's local midnight and end after it.

Only photos in which the face engine finds exactly one face that passes its quality gate are
used, so the truth is knowable: a background face in a news photo would be a real visitor that
the plan does not list. Nothing is copied: the work folder holds links and two text files.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from facestream.core.engine import FaceEngine
from facestream.core.images import ImageError, load_image
from facestream.core.photos import image_files
from facestream.core.splits import Split, person_split
from facestream.services.sink.stats import StoreStats

MEMBER: str = "m:"
STRANGER: str = "v:"
"""Truth ids: ``m:<member id>`` for members, ``v:<name>`` for anonymous visitors."""

Pattern = Literal["once", "same_day", "later_day"]
VISIT_GAP = timedelta(minutes=30)
"""The sink's default ``visit_gap_seconds``: the truth cuts visits where the sink does."""


@dataclass(frozen=True)
class StorePlan:
    """A store and the IANA time zone its days are counted in."""

    store_id: str
    timezone: str

    @classmethod
    def parse(cls, text: str) -> StorePlan:
        """``store`` or ``store:Area/City`` (default zone UTC)."""
        store, _, zone = text.partition(":")
        zone = zone or "UTC"
        ZoneInfo(zone)  # raises on an unknown zone
        return cls(store.strip(), zone.strip())


@dataclass(frozen=True)
class Sighting:
    """One camera frame of one person: the unit of the manifest and of the truth."""

    store_id: str
    camera: str
    at: datetime
    person: str
    photo: Path


@dataclass
class Scenario:
    """The plan: stores, members with their enrollment photos, and every sighting."""

    stores: list[StorePlan]
    members: dict[str, list[Path]]
    sightings: list[Sighting] = field(default_factory=list)
    visit_gap: timedelta = VISIT_GAP

    def zone(self, store_id: str) -> ZoneInfo:
        return ZoneInfo(next(s.timezone for s in self.stores if s.store_id == store_id))

    def days(self, store_id: str) -> list[date]:
        """The local days on which visits to ``store_id`` start."""
        return sorted(
            {v.start.astimezone(self.zone(store_id)).date() for v in self._visits(store_id)}
        )

    def _visits(self, store_id: str) -> list[_Visit]:
        by_person: dict[str, list[datetime]] = defaultdict(list)
        for s in self.sightings:
            if s.store_id == store_id:
                by_person[s.person].append(s.at)
        visits = []
        for person, times in by_person.items():
            times.sort()
            current = _Visit(person, times[0], times[0], 1)
            for t in times[1:]:
                if t - current.end > self.visit_gap:
                    visits.append(current)
                    current = _Visit(person, t, t, 1)
                else:
                    current = _Visit(person, current.start, t, current.events + 1)
            visits.append(current)
        return visits

    def truth(self, store_id: str, day: date) -> StoreStats:
        """PV, UV, new, returning, members and average dwell of a store's local ``day``, as
        the sink should report them (the sink's own result type and definitions)."""
        tz = self.zone(store_id)
        visits = self._visits(store_id)
        first_day: dict[str, date] = {}
        for v in visits:
            d = v.start.astimezone(tz).date()
            first_day[v.person] = min(first_day.get(v.person, d), d)
        today = [v for v in visits if v.start.astimezone(tz).date() == day]
        people = {v.person for v in today}
        # A single-event visit has no measurable dwell: left out of the average, as in the sink.
        dwell = [(v.end - v.start).total_seconds() for v in today if v.events >= 2]
        return StoreStats(
            store=store_id,
            date=day.isoformat(),
            pv=len(today),
            uv=len(people),
            new=sum(1 for p in people if first_day[p] == day),
            returning=sum(1 for p in people if first_day[p] < day),
            members=tuple(sorted(p.removeprefix(MEMBER) for p in people if p.startswith(MEMBER))),
            dwell_seconds_avg=round(sum(dwell) / len(dwell), 3) if dwell else None,
            dwell_visits=len(dwell),
        )

    def all_days(self) -> Iterator[StoreStats]:
        for store in self.stores:
            for day in self.days(store.store_id):
                yield self.truth(store.store_id, day)

    # -- files -------------------------------------------------------------------------------

    def write(self, out: Path) -> tuple[Path, Path, Path]:
        """Write ``members/``, ``manifest.csv`` and ``truth.json`` under ``out``; their paths."""
        out.mkdir(parents=True, exist_ok=True)
        members_dir = out / "members"
        members_dir.mkdir(exist_ok=True)
        for member, photos in self.members.items():
            (members_dir / member).mkdir(exist_ok=True)
            for photo in photos:
                link = members_dir / member / photo.name
                if not link.is_symlink() and not link.exists():
                    link.symlink_to(photo.resolve())
        manifest = out / "manifest.csv"
        ordered = sorted(self.sightings, key=lambda s: (s.at, s.store_id, s.camera))
        with manifest.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "captured_at", "camera", "store"])
            for s in ordered:
                writer.writerow([str(s.photo.resolve()), s.at.isoformat(), s.camera, s.store_id])
        truth = out / "truth.json"
        document = {
            "visit_gap_seconds": int(self.visit_gap.total_seconds()),
            "stores": [{"store": s.store_id, "timezone": s.timezone} for s in self.stores],
            "members": sorted(self.members),
            "days": [d.as_dict() for d in self.all_days()],
            "sightings": [
                {
                    "store": s.store_id,
                    "camera": s.camera,
                    "captured_at": s.at.isoformat(),
                    "path": str(s.photo.resolve()),
                    "person": s.person,
                }
                for s in ordered
            ],
        }
        truth.write_text(json.dumps(document, indent=1) + "\n")
        return members_dir, manifest, truth


@dataclass(frozen=True)
class _Visit:
    person: str
    start: datetime
    end: datetime
    events: int


@dataclass(frozen=True)
class Plan:
    """How many of each kind of person, and over what."""

    stores: Sequence[StorePlan] = (StorePlan("store-7", "Europe/Paris"),)
    start: date = date(2026, 11, 27)
    days: int = 2
    members: int = 4
    returning_same_day: int = 2
    returning_later: int = 3
    once: int = 4
    enroll_photos: tuple[int, int] = (1, 3)
    """A member is enrolled from between this many photos (never used at a visit)."""
    midnight_share: float = 0.1
    """Share of visits that start shortly before the store's local midnight."""
    split: Split | None = "eval"
    """Only people of this split (see :mod:`facestream.core.splits`); None = everyone."""
    seed: int = 7


class NotEnoughPeople(ValueError):
    """The photo folder cannot supply the people the plan asks for."""


class _Photos:
    """Usable photos per person (one face that passes the gate), checked lazily and cached."""

    def __init__(self, engine: FaceEngine) -> None:
        self.engine = engine
        self._ok: dict[Path, bool] = {}

    def usable(self, person: Path, limit: int) -> list[Path]:
        """Up to ``limit`` usable photos of ``person``, in name order."""
        out = []
        for photo in image_files(person):
            if photo not in self._ok:
                self._ok[photo] = self._single_clear_face(photo)
            if self._ok[photo]:
                out.append(photo)
                if len(out) >= limit:
                    break
        return out

    def _single_clear_face(self, photo: Path) -> bool:
        try:
            faces = self.engine.faces(load_image(photo))
        except ImageError:
            return False
        return len(faces) == 1 and faces[0].encoding is not None


def build(images: Path, plan: Plan | None = None, engine: FaceEngine | None = None) -> Scenario:
    """Plan a chain's days from the people photographed in ``images`` (LFW layout)."""
    plan = plan or Plan()
    rng = random.Random(plan.seed)
    photos = _Photos(engine or FaceEngine())
    people = sorted(
        d
        for d in images.iterdir()
        if d.is_dir() and (plan.split is None or person_split(d.name) == plan.split)
    )
    rng.shuffle(people)
    # The richest people become members and returning visitors: they need a photo per visit.
    by_count = sorted(people, key=lambda d: -len(image_files(d)))
    used: set[str] = set()

    def take(count: int, need: int, enroll: int = 0) -> list[tuple[str, list[Path]]]:
        # Fail before running the detector over the folder when the photo counts alone say so.
        candidates = sum(
            1 for d in people if d.name not in used and len(image_files(d)) >= need + enroll
        )
        if candidates < count:
            raise NotEnoughPeople(
                f"{images}: wanted {count} people with {need + enroll}+ photos"
                f" (split {plan.split or 'all'}), the folder has {candidates}"
            )
        chosen: list[tuple[str, list[Path]]] = []
        for d in by_count if need > 1 else people:
            if len(chosen) == count:
                break
            if d.name in used or len(image_files(d)) < need + enroll:
                continue
            usable = photos.usable(d, need + enroll + 4)
            if len(usable) >= need + enroll:
                used.add(d.name)
                chosen.append((d.name, usable))
        if len(chosen) < count:
            raise NotEnoughPeople(
                f"{images}: wanted {count} people with {need + enroll}+ usable photos"
                f" (split {plan.split or 'all'}), found {len(chosen)}"
            )
        return chosen

    enroll_counts = [rng.randint(*plan.enroll_photos) for _ in range(plan.members)]
    members = take(plan.members, 2, max(enroll_counts) if enroll_counts else 0)
    later = take(plan.returning_later, 2)
    same_day = take(plan.returning_same_day, 2)
    once = take(plan.once, 1)

    scenario = Scenario(stores=list(plan.stores), members={})
    days = [plan.start + timedelta(days=i) for i in range(plan.days)]
    for (name, usable), n_enroll in zip(members, enroll_counts, strict=True):
        scenario.members[name] = usable[:n_enroll]
        visits = _spread(rng, days, min(len(usable) - n_enroll, rng.randint(1, 2)))
        _visit_all(scenario, rng, plan, MEMBER + name, usable[n_enroll:], visits)
    for name, usable in later:
        count = min(len(usable), rng.randint(2, max(2, len(days))))
        _visit_all(scenario, rng, plan, STRANGER + name, usable, _spread(rng, days, count))
    for name, usable in same_day:
        day = rng.choice(days)
        _visit_all(scenario, rng, plan, STRANGER + name, usable, [day, day])
    for name, usable in once:
        _visit_all(scenario, rng, plan, STRANGER + name, usable, [rng.choice(days)])
    scenario.sightings.sort(key=lambda s: (s.at, s.store_id, s.camera))
    return scenario


def _spread(rng: random.Random, days: list[date], count: int) -> list[date]:
    """``count`` visit days, on different days while there are enough of them."""
    if count <= len(days):
        return sorted(rng.sample(days, count))
    return sorted(rng.choice(days) for _ in range(count))


def _visit_all(
    scenario: Scenario,
    rng: random.Random,
    plan: Plan,
    person: str,
    photos: list[Path],
    visit_days: list[date],
) -> None:
    """Schedule the visits of one person: a store each (members and regulars keep to one
    home store most of the time), opening hours, cameras, a different photo per sighting."""
    home = rng.choice(scenario.stores)
    cameras_per_visit = [_cameras(rng) for _ in visit_days]
    assigned = _assign_photos(photos, [len(c) for c in cameras_per_visit])
    taken: list[tuple[datetime, datetime]] = []
    for day, cameras, shots in zip(visit_days, cameras_per_visit, assigned, strict=True):
        store = home if rng.random() < 0.8 else rng.choice(scenario.stores)
        tz = ZoneInfo(store.timezone)
        start = _start_time(rng, plan, day, tz, taken)
        taken.append((start, start + timedelta(hours=1)))
        at = start
        for i, (camera, photo) in enumerate(zip(cameras, shots, strict=True)):
            if i:
                at += timedelta(minutes=rng.randint(2, 12), seconds=rng.randint(0, 59))
            scenario.sightings.append(Sighting(store.store_id, camera, at, person, photo))


def _cameras(rng: random.Random) -> list[str]:
    cameras = ["entrance"]
    if rng.random() < 0.6:
        cameras.append("aisle")
    if rng.random() < 0.5:
        cameras.append("checkout")
    return cameras


def _assign_photos(photos: list[Path], sightings: list[int]) -> list[list[Path]]:
    """A photo per sighting: different across visits first, then within a visit; reused only
    when the person has fewer photos than sightings."""
    # Visit i's first sighting gets photo i, so re-identification across visits never sees the
    # same image twice while there are at least as many photos as visits.
    firsts = photos[: len(sightings)]
    spare = photos[len(sightings) :] or photos
    cursor = 0
    out = []
    for i, n in enumerate(sightings):
        shots = [firsts[i % len(firsts)]]
        for _ in range(n - 1):
            shots.append(spare[cursor % len(spare)])
            cursor += 1
        out.append(shots)
    return out


def _start_time(
    rng: random.Random, plan: Plan, day: date, tz: ZoneInfo, taken: list[tuple[datetime, datetime]]
) -> datetime:
    """A local start time on ``day``: opening hours, or just before midnight for a share of
    visits; at least two visit gaps away from the person's other visits, so that two planned
    visits never merge into one."""
    for _ in range(100):
        if rng.random() < plan.midnight_share:
            local = time(23, rng.randint(40, 55), rng.randint(0, 59))
        else:
            local = time(rng.randint(9, 20), rng.randint(0, 59), rng.randint(0, 59))
        start = datetime.combine(day, local, tzinfo=tz)
        if all(abs(start - s) > timedelta(hours=2) for s, _ in taken):
            return start
    raise NotEnoughPeople(f"cannot place another visit on {day}")
