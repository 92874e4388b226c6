"""A simulated store: two days of entrance-camera frames with known truth, from sample photos.

The scenario has members (enrolled from some of their photos, seen in others), strangers who
came yesterday and come back today (twice), and strangers seen once. Each visit is seen by the
entrance camera and, a few minutes later, by a second camera inside the store: one visit, two
cameras. A stranger's later appearances are a mirrored, slightly rescaled copy of the photo of
their first, as a second frame of the same person would be.

Only photos in which the detector finds exactly one face are used, so the truth is knowable:
a background face in a news photo would be a real visitor the truth does not list. Files are
written to a work folder (symlinks for the unchanged photos); nothing is copied into the repo.
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from PIL import Image, ImageOps

from facestream.core.engine import FaceEngine
from facestream.core.images import load_image
from facestream.core.photos import image_files


@dataclass(frozen=True)
class Appearance:
    at: datetime
    camera: str
    person: str
    """The truth: member id, or ``stranger:<name>``."""
    path: Path


@dataclass
class Scenario:
    store: str
    timezone: str
    members_dir: Path
    manifest: Path
    day: date
    """The day whose stats the replay prints (the last day)."""
    appearances: list[Appearance] = field(default_factory=list)
    visit_gap: timedelta = timedelta(minutes=30)

    def truth(self, day: date | None = None) -> dict[str, Any]:
        """PV, UV, new, returning, members and average dwell of ``day``, from the schedule:
        the same definitions as the sink, applied to who really was there."""
        day = day or self.day
        tz = ZoneInfo(self.timezone)
        by_person: dict[str, list[datetime]] = defaultdict(list)
        for a in self.appearances:
            by_person[a.person].append(a.at)
        # (person, start, end, events): a visit ends when the next event is over the gap away.
        visits: list[tuple[str, datetime, datetime, int]] = []
        for person, times in by_person.items():
            times.sort()
            start = last = times[0]
            events = 1
            for t in times[1:]:
                if t - last > self.visit_gap:
                    visits.append((person, start, last, events))
                    start, events = t, 0
                last = t
                events += 1
            visits.append((person, start, last, events))
        first_day: dict[str, date] = {}
        for person, start, _, _ in visits:
            d = start.astimezone(tz).date()
            first_day[person] = min(first_day.get(person, d), d)
        today = [v for v in visits if v[1].astimezone(tz).date() == day]
        people = {v[0] for v in today}
        # A single-event visit has no measurable dwell: left out of the average, as in the sink.
        dwell = [(end - start).total_seconds() for _, start, end, n in today if n >= 2]
        return {
            "store": self.store,
            "date": day.isoformat(),
            "pv": len(today),
            "uv": len(people),
            "new": sum(1 for p in people if first_day[p] == day),
            "returning": sum(1 for p in people if first_day[p] < day),
            "members": sorted(p for p in people if not p.startswith("stranger:")),
            "dwell_seconds_avg": round(sum(dwell) / len(dwell), 3) if dwell else None,
        }


def _single_face_photos(folder: Path, engine: FaceEngine) -> list[Path]:
    out = []
    for p in image_files(folder):
        dets = engine.detect(load_image(p))
        if len(dets) == 1:
            out.append(p)
    return out


def _variant(src: Path, dst: Path) -> Path:
    """A mirrored, 90%-scaled copy: another frame of the same person."""
    img = ImageOps.mirror(Image.open(src).convert("RGB"))
    w, h = img.size
    img.resize((int(w * 0.9), int(h * 0.9))).save(dst, quality=92)
    return dst


def build(
    datasets: Path,
    work: Path,
    *,
    store: str = "store-7",
    timezone: str = "Europe/Paris",
    day: date = date(2026, 11, 28),
    members: int = 4,
    returning: int = 3,
    once: int = 4,
    seed: int = 7,
) -> Scenario:
    """Write the members folder, the frames and the manifest under ``work``; return the plan."""
    rng = random.Random(seed)
    engine = FaceEngine()
    lfw = datasets / "lfw-fold1" / "images"
    people = sorted(d for d in lfw.iterdir() if d.is_dir())
    candidates = [d for d in people if len(image_files(d)) >= 5]
    rng.shuffle(candidates)
    member_photos: dict[str, list[Path]] = {}
    for d in candidates:
        photos = _single_face_photos(d, engine)
        if len(photos) >= 5:
            member_photos[d.name] = photos
        if len(member_photos) == members:
            break
    others = [d for d in people if d.name not in member_photos and len(image_files(d)) <= 2]
    rng.shuffle(others)
    stranger_photos: dict[str, Path] = {}
    for d in others:
        photos = _single_face_photos(d, engine)
        if photos:
            stranger_photos[d.name] = photos[0]
        if len(stranger_photos) == returning + once:
            break

    members_dir, frames = work / "members", work / "frames"
    for folder in (members_dir, frames):
        folder.mkdir(parents=True, exist_ok=True)
    for name, photos in member_photos.items():
        (members_dir / name).mkdir(exist_ok=True)
        for p in photos[:3]:
            link = members_dir / name / p.name
            if not link.exists():
                link.symlink_to(p.resolve())

    tz = ZoneInfo(timezone)
    scenario = Scenario(store, timezone, members_dir, work / "manifest.csv", day)
    counter = iter(range(10_000))

    def visit(person: str, photo: Path, when: datetime, variant: bool) -> None:
        # Entrance camera, then the in-store camera a few minutes later: one visit.
        for camera, delay in (("entrance", 0), ("aisle", rng.randint(2, 9))):
            dst = frames / f"{next(counter):04d}_{camera}_{photo.stem}.jpg"
            if variant or camera == "aisle":
                _variant(photo, dst)
            else:
                dst.symlink_to(photo.resolve())
            at = when + timedelta(minutes=delay)
            scenario.appearances.append(Appearance(at, camera, person, dst))

    yesterday = day - timedelta(days=1)
    strangers = list(stranger_photos.items())
    member_list = list(member_photos.items())

    def local(d: date, hh: int, mm: int) -> datetime:
        return datetime.combine(d, time(hh, mm), tzinfo=tz)

    # Yesterday: the returning strangers and the first member come once.
    for i, (name, photo) in enumerate(strangers[:returning]):
        visit(f"stranger:{name}", photo, local(yesterday, 11, 5 * i), variant=False)
    visit(member_list[0][0], member_list[0][1][3], local(yesterday, 17, 0), variant=False)
    # Today: every member once, returning strangers twice (morning and afternoon), the rest once.
    for i, (name, photos) in enumerate(member_list):
        visit(name, photos[4], local(day, 9, 30 + 7 * i), variant=False)
    for i, (name, photo) in enumerate(strangers[:returning]):
        visit(f"stranger:{name}", photo, local(day, 10, 10 * i), variant=True)
        visit(f"stranger:{name}", photo, local(day, 15, 10 * i), variant=True)
    for i, (name, photo) in enumerate(strangers[returning:]):
        visit(f"stranger:{name}", photo, local(day, 12, 9 * i), variant=False)

    scenario.appearances.sort(key=lambda a: a.at)
    with scenario.manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "captured_at", "camera"])
        for a in scenario.appearances:
            writer.writerow([a.path.relative_to(work).as_posix(), a.at.isoformat(), a.camera])
    return scenario
