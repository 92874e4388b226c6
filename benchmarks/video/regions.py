"""Detection where it is needed: what skipping still frames and searching near the tracks first
save in detector time, and what they cost in faces found.

    python -m benchmarks.video.regions [--seeds 1 2 3 4] [--people 8] [--returning 4] [--fps 10]
        [--hamilton PATH | --no-hamilton] [--misses]

Renders a walk-by clip per seed (:mod:`facestream.tools.walkby`, as ``python -m benchmarks.video``
does) and reads the real clip ``video/short_hamilton_clip.mp4`` of the shared data. Every frame
goes through three detection schedules (:class:`facestream.core.regions.DetectionScheduler`),
each feeding its own :class:`facestream.core.tracking.Tracker`:

* ``every frame``: the whole frame searched every frame (what the tracker was measured on);
* ``motion``: skipped where nothing moved and no track is open, else the whole frame;
* ``motion+near``: also, with tracks open, crops around the tracks' expected faces, and the
  whole frame only on motion outside them or at least every second while anything moves.

The three run interleaved on each decoded frame, so that the machine's load weighs on them alike:
compare the ratios, not the milliseconds. Per schedule it prints the frames searched whole, in
crops or not at all, the pixels searched, the detector's time per frame (motion test included),
the truth's faces found (walk-by: a face box wholly in view and not occluded, found when a
detected box overlaps it by 0.4 of their union), the faces of ``every frame`` the schedule also
found (the only measure on the real clip, which has no truth), and what the tracker made of it:
the passes with a sighting, encodings per pass, and re-identification of the people who pass
twice (as ``python -m benchmarks.video`` prints it).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import fmt, load_average, markdown_table
from benchmarks.video.passes import pass_at, reidentification
from facestream.core.engine import Encoding, FaceEngine
from facestream.core.images import RGBImage
from facestream.core.regions import DetectionScheduler, Scan, ScheduleConfig
from facestream.core.tracking import Sighting, Tracker, iou
from facestream.schemas.messages import Box
from facestream.tools import walkby

SCHEDULES: dict[str, ScheduleConfig] = {
    "every frame": ScheduleConfig(motion=False, near_tracks=False),
    "motion": ScheduleConfig(near_tracks=False),
    "motion+near": ScheduleConfig(),
}
BASELINE = "every frame"
FOUND_IOU = 0.4
"""A detected box this close to a truth box (intersection over union) found that face."""
SAME_IOU = 0.5
"""A schedule's box this close to a box of ``every frame`` in the same frame is the same face."""


@dataclass(frozen=True)
class Miss:
    """A face the whole frame shows that a schedule did not find, and what it searched."""

    frame: int
    box: Box
    scan: Scan

    def __str__(self) -> str:
        b, scan = self.box, self.scan
        inside = any(
            r.left <= b.left and b.right <= r.right and r.top <= b.top and b.bottom <= r.bottom
            for r in scan.regions
        )
        searched = (
            "whole frame"
            if scan.full
            else f"{len(scan.regions)} crops"
            if scan.regions
            else "nothing"
        )
        return (
            f"frame {self.frame}, face {b.left},{b.top}-{b.right},{b.bottom}: searched {searched}"
            f"{' (the face inside one)' if inside else ''}, {scan.moved_cells} cells moved"
        )


@dataclass
class Run:
    """One schedule on one clip."""

    frames: int = 0
    full: int = 0
    cropped: int = 0
    skipped: int = 0
    searched_px: int = 0
    seconds: float = 0.0
    truth_faces: int = 0
    found: int = 0
    baseline_faces: int = 0
    same: int = 0
    encoded: int = 0
    sightings: list[Sighting] = field(default_factory=list)
    misses: list[Miss] = field(default_factory=list)
    """Faces of ``every frame`` this schedule did not find."""
    passes: int = 0
    passes_seen: int = 0
    distances: list[float] = field(default_factory=list)
    """Re-identification: each second pass's distance to the person's first."""
    rank1: int = 0
    """Second passes whose nearest first pass is the person's own."""
    asked: int = 0

    def add(self, other: Run) -> None:
        """Sum ``other`` into this run (totals over clips)."""
        for f in fields(self):
            if f.name != "sightings":  # those of one clip only
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def frames_of(path: Path) -> Iterator[RGBImage]:
    """The frames of a video file, in RGB."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    finally:
        capture.release()


def run_video(
    path: Path, fps: float, engine: FaceEngine, truth: dict[str, Any] | None
) -> dict[str, Run]:
    """Every schedule over the frames of ``path``, interleaved frame by frame."""
    boxes: dict[int, list[Box]] = {}
    if truth is not None:
        for p in truth["passes"]:
            for f, top, right, bottom, left, occluded in p["boxes"]:
                if not occluded:
                    boxes.setdefault(f, []).append(
                        Box(top=top, right=right, bottom=bottom, left=left)
                    )
    runs = {name: Run() for name in SCHEDULES}
    schedulers = {name: DetectionScheduler(engine, cfg) for name, cfg in SCHEDULES.items()}
    trackers = {name: Tracker() for name in SCHEDULES}
    for frame, rgb in enumerate(frames_of(path)):
        at = frame / fps
        size = (rgb.shape[1], rgb.shape[0])
        baseline: list[Box] = []
        for name, scheduler in schedulers.items():
            run, tracker = runs[name], trackers[name]
            started = time.perf_counter()
            scan = scheduler.scan(at, rgb, tracker.expected_boxes(at))
            run.seconds += time.perf_counter() - started
            run.frames += 1
            run.full += scan.full
            run.cropped += bool(scan.regions)
            run.skipped += scan.skipped
            run.searched_px += scan.searched_px
            found = [c.box for c in scan.candidates]
            if name == BASELINE:
                baseline = found
            run.baseline_faces += len(baseline)
            missed = [b for b in baseline if not any(iou(b, f) >= SAME_IOU for f in found)]
            run.same += len(baseline) - len(missed)
            run.misses += [Miss(frame, b, scan) for b in missed]
            run.truth_faces += len(boxes.get(frame, []))
            run.found += sum(
                any(iou(t, f) >= FOUND_IOU for f in found) for t in boxes.get(frame, [])
            )
            run.sightings += tracker.update(at, scan.candidates, partial(engine.encode, rgb), size)
    for name, run in runs.items():
        run.sightings += trackers[name].flush()
        run.encoded = trackers[name].encoded
        if truth is not None:
            _score_passes(run, truth, fps)
    return runs


def _score_passes(run: Run, truth: dict[str, Any], fps: float) -> None:
    """Which passes got a sighting, and re-identification on the sightings' encodings."""
    tracked: dict[int, Encoding] = {}
    for s in run.sightings:
        index = pass_at(truth["passes"], round(s.representative.at * fps), s.representative.box)
        if index is not None:
            tracked.setdefault(index, s.encoding)
    run.passes = len(truth["passes"])
    run.passes_seen = len(tracked)
    run.distances, run.rank1, run.asked = reidentification(truth["passes"], tracked)


def rows_of(clip: str, runs: dict[str, Run]) -> list[list[object]]:
    """One table row per schedule, with its ratios to ``every frame``."""
    base = runs[BASELINE]
    rows: list[list[object]] = []
    for name, r in runs.items():
        rows.append(
            [
                clip,
                name,
                r.frames,
                r.full,
                r.cropped,
                r.skipped,
                fmt(r.searched_px / max(1, base.searched_px), 2),
                fmt(1000 * r.seconds / max(1, r.frames), 1),
                fmt(r.seconds / base.seconds if base.seconds else None, 2),
                f"{r.found}/{r.truth_faces}" if r.truth_faces else "-",
                f"{r.same}/{r.baseline_faces}",
                f"{r.passes_seen}/{r.passes}" if r.passes else "-",
                r.encoded,
                f"{r.rank1}/{r.asked}" if r.asked else "-",
                fmt(float(np.mean(r.distances)), 3) if r.distances else "-",
            ]
        )
    return rows


HEADERS = [
    "clip",
    "schedule",
    "frames",
    "whole",
    "crops",
    "skipped",
    "pixels vs every frame",
    "detect ms/frame",
    "time vs every frame",
    "truth faces found",
    "same as every frame",
    "passes seen",
    "encoded",
    "rank-1",
    "mean distance",
]


def main() -> None:
    datasets = Path(os.environ.get("FACESTREAM_DATASETS", "../shared/datasets"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3, 4])
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--returning", type=int, default=4)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--images", type=Path, default=datasets / "lfw-fold1" / "images")
    parser.add_argument(
        "--hamilton", type=Path, default=datasets / "video" / "short_hamilton_clip.mp4"
    )
    parser.add_argument("--no-hamilton", action="store_true")
    parser.add_argument(
        "--misses", action="store_true", help="list the hamilton faces a schedule missed"
    )
    args = parser.parse_args()
    engine = FaceEngine()
    print(f"load average at start: {load_average()}", flush=True)
    rows: list[list[object]] = []
    totals = {name: Run() for name in SCHEDULES}
    for seed in args.seeds:
        plan = walkby.ClipPlan(
            people=args.people, returning=args.returning, fps=args.fps, seed=seed
        )
        with tempfile.TemporaryDirectory() as tmp:
            walkby.render(args.images, Path(tmp), plan, engine)
            runs = run_video(
                Path(tmp) / walkby.CLIP, plan.fps, engine, walkby.load_truth(Path(tmp))
            )
        for name, run in runs.items():
            totals[name].add(run)
        rows += rows_of(f"seed {seed}", runs)
        print(f"seed {seed}: done", flush=True)
    if args.seeds:
        rows += rows_of("all walk-by", totals)
    if not args.no_hamilton:
        import cv2

        capture = cv2.VideoCapture(str(args.hamilton))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        capture.release()
        if fps <= 0:
            raise SystemExit(f"cannot read {args.hamilton}")
        hamilton = run_video(args.hamilton, fps, engine, None)
        rows += rows_of("hamilton", hamilton)
        if args.misses:
            for name, run in hamilton.items():
                for miss in run.misses:
                    print(f"hamilton, {name}: {miss}")
    print()
    print(markdown_table(HEADERS, rows))
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
