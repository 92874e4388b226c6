"""The main job on sample photos: enroll known people, then identify members and strangers.

Built from the LFW subset in the datasets folder: people with at least ``min_photos`` photos are
members, enrolled from all their photos but the last; the last one is probed and must come back
as them. People outside the gallery probe as strangers and must come back unknown. The
multi-face photos show that every face in a frame is handled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facestream.core.enrollment import Photo, enroll_photos
from facestream.core.gallery import Gallery, GalleryConfig
from facestream.core.photos import encode_many, image_files, pick_subject


@dataclass(frozen=True)
class Probe:
    path: Path
    truth: str | None
    """The member the photo shows, or None for a stranger (expected: unknown)."""


@dataclass(frozen=True)
class Outcome:
    probe: Probe
    face: int
    result: str
    distance: float | None
    correct: bool


def plan(
    datasets: Path, members: int, strangers: int, min_photos: int = 4
) -> tuple[list[Photo], list[Probe]]:
    """Choose who is enrolled with which photos and what is probed."""
    people = sorted(
        (d for d in (datasets / "lfw-fold1" / "images").iterdir() if d.is_dir()),
        key=lambda d: d.name,
    )
    photos_of = {d.name: image_files(d) for d in people}
    many = [n for n in photos_of if len(photos_of[n]) >= min_photos][:members]
    enroll = [Photo(p, n, n.replace("_", " ")) for n in many for p in photos_of[n][:-1]]
    probes = [Probe(photos_of[n][-1], n) for n in many]
    others = [n for n in photos_of if n not in many and len(photos_of[n]) >= 2][:strangers]
    probes += [Probe(photos_of[n][0], None) for n in others]
    multi = datasets / "multi-face"
    probes += [Probe(multi / f, None) for f in ("two_people.jpg", "obama_and_biden.jpg")]
    return enroll, probes


def run(
    datasets: Path,
    echo: Callable[[str], None],
    members: int = 25,
    strangers: int = 15,
    config: GalleryConfig | None = None,
    progress: bool = False,
) -> list[Outcome]:
    """Enroll, identify every probe, print a line per face and a summary; return outcomes
    (``progress``: bars on stderr)."""
    enroll, probes = plan(datasets, members, strangers)
    gallery = Gallery(config)
    started = time.perf_counter()
    report = enroll_photos(enroll, gallery, progress=progress)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
    echo(
        f"enrolled {len(gallery)} members from {len(enroll)} photos ({counts}) "
        f"in {time.perf_counter() - started:.1f}s"
    )
    truth = {p.path: p.truth for p in probes}
    outcomes: list[Outcome] = []
    echo(f"{'photo':<44} {'face':>4}  {'expected':<22} {'result':<22} {'distance':>8}")
    for enc in encode_many(truth, progress="identifying" if progress else None):
        usable = [f for f in enc.faces if f.encoding is not None]
        vectors = [f.encoding for f in usable if f.encoding is not None]
        decisions = gallery.identify_batch(vectors) if vectors else []
        if not decisions:
            outcomes.append(Outcome(Probe(enc.path, truth[enc.path]), 0, "no face", None, False))
        # The member is the centred face; anyone else in the photo is a bystander, not enrolled.
        subject = pick_subject(usable, enc.shape, "central")
        for i, (face, d) in enumerate(zip(usable, decisions, strict=True)):
            expected = truth[enc.path] if face is subject else None
            result = d.identity.id if d.identity else "unknown"
            correct = result == (expected or "unknown")
            outcomes.append(Outcome(Probe(enc.path, expected), i, result, d.distance, correct))
    for o in outcomes:
        dist = "" if o.distance is None else f"{o.distance:.3f}"
        mark = "ok" if o.correct else "WRONG"
        echo(
            f"{o.probe.path.name:<44} {o.face:>4}  {o.probe.truth or 'unknown':<22} "
            f"{o.result:<22} {dist:>8}  {mark}"
        )
    right = sum(o.correct for o in outcomes)
    seconds = time.perf_counter() - started
    echo(f"{right}/{len(outcomes)} faces identified correctly in {seconds:.1f}s")
    return outcomes
