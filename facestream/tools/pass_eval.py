"""How well a camera's video becomes person passes, against a truth a person wrote down.

``facestream eval passes --video FILE --truth passes.csv [--fps N] [--json]`` reads the video
as a camera does (:func:`~facestream.services.camera.video.frames_from_video`), follows its
faces with the detector's own code (:class:`~facestream.core.passes.VideoPasses`, with the
``FACESTREAM_DETECTOR_*`` settings in force) and compares the passes it publishes with the
truth: one line per time someone crossed the view,

    person,enter,leave
    alice,0.0,6.5
    bob,3.2,9.0
    alice,41,48.5

``enter`` and ``leave`` in seconds from the start of the video (``m:ss`` or ``h:mm:ss`` too);
``person`` any label, the same for the same person, so that their passes can be told apart
from other people's.

The truth has times, not boxes (boxes are what nobody annotates by hand), so a pass is matched
by time: each observation spans its pass's first and last sighting (``captured_at`` to
``last_seen``); observations and truth passes are paired one to one by the largest overlap
(within :data:`SLACK`), and an observation left over goes to the pass it overlaps most, as a
*split* of it. Where two people cross the view at the same moment, times alone cannot say which
observation is whose; the pairing is then by overlap only, and the re-identification figures
(which use the pairing) carry that doubt.
"""

from __future__ import annotations

import csv
import io
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from facestream.core.detection import DetectorSettings
from facestream.core.engine import FaceEngine, face_distance
from facestream.core.passes import VideoPasses
from facestream.schemas import FaceObservation
from facestream.services.camera.publisher import frame_meta
from facestream.services.camera.video import frames_from_video

SLACK: Final = 0.5
"""Seconds a truth pass is widened by on each side: a hand-written time is not frame-exact."""
START: Final = datetime(2026, 1, 1, tzinfo=UTC)
"""Event time of the video's first frame (only differences matter)."""


class TruthError(ValueError):
    """The truth file cannot be read; the message says where."""


@dataclass(frozen=True)
class TruthPass:
    person: str
    enter: float
    leave: float


@dataclass
class PassReport:
    """The comparison, with the figures ``--json`` prints."""

    video: str
    fps: float
    frames: int
    truth: list[TruthPass]
    observations: list[FaceObservation]
    paired: dict[int, list[int]]
    """Truth pass index -> the observations paired with it (first the one-to-one pairing)."""
    stray: list[int]
    """Observations that overlap no truth pass."""
    ms_per_frame: float
    reid: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        found = [i for i in range(len(self.truth)) if self.paired.get(i)]
        return {
            "video": self.video,
            "fps": self.fps,
            "frames": self.frames,
            "truth_passes": len(self.truth),
            "observations": len(self.observations),
            "found": len(found),
            "one_to_one": sum(len(self.paired[i]) == 1 for i in found),
            "missed": len(self.truth) - len(found),
            "split": sum(len(self.paired[i]) - 1 for i in found),
            "stray": len(self.stray),
            "encoded": sum(o.encoded or 0 for o in self.observations),
            "ms_per_frame": round(self.ms_per_frame, 1),
            "reidentification": self.reid,
            "passes": [
                {
                    "person": t.person,
                    "enter": t.enter,
                    "leave": t.leave,
                    "observations": [
                        self.observations[j].observation_id for j in self.paired.get(i, [])
                    ],
                }
                for i, t in enumerate(self.truth)
            ],
        }


def read_truth(path: Path) -> list[TruthPass]:
    """The passes of a truth CSV (header ``person,enter,leave``). Raises :class:`TruthError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TruthError(f"{path}: cannot be read: {exc}") from exc
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip().lower() for c in rows[0]] != ["person", "enter", "leave"]:
        raise TruthError(f"{path}: the first line must be the header person,enter,leave")
    out = []
    for number, row in enumerate(rows[1:], 2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 3 or not row[0].strip():
            raise TruthError(f"{path}:{number}: expected person,enter,leave")
        enter, leave = _seconds(row[1], path, number), _seconds(row[2], path, number)
        if leave < enter:
            raise TruthError(f"{path}:{number}: leave ({row[2]}) is before enter ({row[1]})")
        out.append(TruthPass(row[0].strip(), enter, leave))
    if not out:
        raise TruthError(f"{path}: no pass")
    return out


def evaluate(
    video: Path,
    truth: Sequence[TruthPass],
    *,
    fps: float = 5.0,
    settings: DetectorSettings | None = None,
    engine: FaceEngine | None = None,
) -> PassReport:
    """Run the video through the detector's pass code and compare with ``truth``."""
    settings = settings or DetectorSettings()
    engine = engine or FaceEngine(settings.engine_config())
    passes = VideoPasses.from_settings(engine, settings)
    observations: list[FaceObservation] = []
    frames, spent = 0, 0.0
    for frame in frames_from_video(str(video), "eval", fps=fps, clock=lambda: START):
        meta = frame_meta("eval", frame)
        started = time.perf_counter()
        observations += passes.frame(meta, frame.data).observations
        spent += time.perf_counter() - started
        frames += 1
    observations += passes.end_all()
    paired, stray = pair(list(truth), observations)
    report = PassReport(
        video=video.name,
        fps=fps,
        frames=frames,
        truth=list(truth),
        observations=observations,
        paired=paired,
        stray=stray,
        ms_per_frame=1000 * spent / max(1, frames),
    )
    report.reid = reidentification(report)
    return report


def span(o: FaceObservation) -> tuple[float, float]:
    """An observation's time in view, in seconds from the video's start."""
    first = (o.captured_at - START).total_seconds()
    last = ((o.last_seen or o.captured_at) - START).total_seconds()
    return first, last


def overlap(a: tuple[float, float], t: TruthPass) -> float:
    """Seconds ``a`` shares with ``t`` widened by :data:`SLACK` (a point inside counts as a
    tiny overlap, so that a one-frame pass is paired too)."""
    lo, hi = max(a[0], t.enter - SLACK), min(a[1], t.leave + SLACK)
    return hi - lo + 1e-6 if hi >= lo else 0.0


def pair(
    truth: list[TruthPass], observations: list[FaceObservation]
) -> tuple[dict[int, list[int]], list[int]]:
    """One to one by the largest overlap first; then each observation left to the pass it
    overlaps most (a split), or to none (stray)."""
    scores = sorted(
        (
            (-overlap(span(o), t), i, j)
            for j, o in enumerate(observations)
            for i, t in enumerate(truth)
            if overlap(span(o), t) > 0
        ),
    )
    paired: dict[int, list[int]] = {}
    used: set[int] = set()
    for _, i, j in scores:
        if i not in paired and j not in used:
            paired[i] = [j]
            used.add(j)
    stray = []
    for j, o in enumerate(observations):
        if j in used:
            continue
        best = max(range(len(truth)), key=lambda i: overlap(span(o), truth[i]))
        if overlap(span(o), truth[best]) > 0:
            paired.setdefault(best, []).append(j)
        else:
            stray.append(j)
    return paired, stray


def reidentification(report: PassReport) -> dict[str, Any]:
    """For each pass of a person seen before: is the nearest earlier pass (by the encodings
    of the observations paired with them) one of theirs? And the mean distances between
    passes of the same person and of different people."""
    encoding = {i: report.observations[js[0]].vector for i, js in report.paired.items() if js}
    order = sorted(encoding, key=lambda i: report.truth[i].enter)
    asked = right = 0
    same: list[float] = []
    other: list[float] = []
    for n, i in enumerate(order):
        earlier = order[:n]
        for k in earlier:
            d = face_distance(encoding[i], encoding[k])
            (same if report.truth[k].person == report.truth[i].person else other).append(d)
        if not any(report.truth[k].person == report.truth[i].person for k in earlier):
            continue
        asked += 1
        nearest = min(earlier, key=lambda k: face_distance(encoding[i], encoding[k]))
        right += report.truth[nearest].person == report.truth[i].person
    return {
        "returning_passes": asked,
        "nearest_is_same_person": right,
        "same_person_mean": round(statistics.fmean(same), 3) if same else None,
        "other_person_mean": round(statistics.fmean(other), 3) if other else None,
    }


def _seconds(text: str, path: Path, number: int) -> float:
    """``12.5``, ``1:02.5`` or ``1:00:02`` as seconds."""
    parts = text.strip().split(":")
    try:
        if not 1 <= len(parts) <= 3:
            raise ValueError(text)
        value = timedelta()
        for unit, part in zip((3600, 60, 1)[-len(parts) :], parts, strict=True):
            value += timedelta(seconds=unit * float(part))
    except (ValueError, OverflowError):
        raise TruthError(
            f"{path}:{number}: {text!r} is not a time (seconds, m:ss or h:mm:ss)"
        ) from None
    seconds = value.total_seconds()
    if seconds < 0:
        raise TruthError(f"{path}:{number}: {text!r} is not a time from the video's start")
    return seconds
