"""Face tracks on walk-by clips: encodings per person pass, and re-identification, tracked
versus one encoding per frame.

    python -m benchmarks.video [--seeds 1 2 3] [--people 8] [--returning 4] [--fps 10]

Renders a walk-by clip per seed from the evaluation half of the shared photos
(:mod:`facestream.tools.walkby`), runs the face engine's detection on every frame, and follows
the faces with :class:`facestream.core.tracking.Tracker`. It prints, per clip and in total:

* faces that passed the gate in frames (what the detector encodes today: one observation per
  face per frame) against the faces the tracker encoded, and their ratio;
* sightings against the truth's passes: a pass split into several sightings, a sighting whose
  encoding averages faces of two passes, or one whose best face is in no pass, is a tracking
  error (a pass without a sighting shows as a returning person missing below);
* re-identification of the people who pass twice: the distance between their two passes and
  whether the nearest first pass of anyone to their second pass is their own, once with the
  tracker's sightings (the mean of a pass's best encodings) and once with single frames (the
  first face of the pass that passed the gate, as an untracked detector would publish first).

Detection dominates the time (every frame is searched); encoding a face costs about 77 ms.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import fmt, load_average, markdown_table
from benchmarks.video.passes import pass_at, reidentification
from facestream.core.engine import Encoding, FaceEngine
from facestream.core.tracking import Sighting, Tracker
from facestream.tools import walkby


@dataclass
class ClipResult:
    seed: int
    frames: int
    passes: int
    sightings: int
    split: int
    """Passes published as more than one sighting (extra sightings)."""
    merged: int
    """Sightings whose encoding averages faces of more than one pass."""
    stray: int
    """Sightings whose best face is in no pass's box (a face cut by the edge, say)."""
    gated: int
    encoded: int
    tracked: dict[int, Encoding]
    """Pass index -> the sighting's encoding (the first sighting of the pass)."""
    single: dict[int, Encoding]
    """Pass index -> the first gated face of the pass, encoded."""
    seconds: float


def run_clip(images: Path, plan: walkby.ClipPlan, engine: FaceEngine) -> tuple[ClipResult, Any]:
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        clip = walkby.render(images, Path(tmp), plan, engine)
        truth = walkby.load_truth(Path(tmp))
        capture = cv2.VideoCapture(str(Path(tmp) / walkby.CLIP))
        started = time.perf_counter()
        tracker = Tracker()
        sightings: list[Sighting] = []
        single: dict[int, Encoding] = {}
        gated = 0
        for frame in range(clip.frames):
            ok, bgr = capture.read()
            if not ok:
                raise RuntimeError(f"clip ended at frame {frame} of {clip.frames}")
            rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
            faces = engine.candidates(rgb)
            good = [f for f in faces if f.quality.passed]
            gated += len(good)
            for face in good:  # the single-frame baseline: each pass's first good face
                index = pass_at(truth["passes"], frame, face.box)
                if index is not None and index not in single:
                    single[index] = engine.encode(rgb, [face])[0]
            sightings += tracker.update(
                frame / plan.fps, faces, partial(engine.encode, rgb), (rgb.shape[1], rgb.shape[0])
            )
        capture.release()
        sightings += tracker.flush()
        elapsed = time.perf_counter() - started
    tracked: dict[int, Encoding] = {}
    per_pass: dict[int, int] = {}
    merged = stray = 0
    for s in sightings:
        sources = {
            i
            for e in s.best
            if (i := pass_at(truth["passes"], round(e.at * plan.fps), e.box)) is not None
        }
        merged += len(sources) > 1
        index = pass_at(
            truth["passes"], round(s.representative.at * plan.fps), s.representative.box
        )
        if index is None:
            stray += 1
            continue
        per_pass[index] = per_pass.get(index, 0) + 1
        tracked.setdefault(index, s.encoding)
    result = ClipResult(
        seed=plan.seed,
        frames=clip.frames,
        passes=len(truth["passes"]),
        sightings=len(sightings),
        split=sum(n - 1 for n in per_pass.values()),
        merged=merged,
        stray=stray,
        gated=gated,
        encoded=tracker.encoded,
        tracked=tracked,
        single=single,
        seconds=elapsed,
    )
    return result, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--returning", type=int, default=4)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument(
        "--images",
        type=Path,
        default=Path(os.environ.get("FACESTREAM_DATASETS", "../shared/datasets"))
        / "lfw-fold1"
        / "images",
    )
    args = parser.parse_args()
    engine = FaceEngine()
    rows = []
    totals = {"gated": 0, "encoded": 0, "passes": 0, "split": 0, "merged": 0, "stray": 0}
    reid: dict[str, tuple[list[float], int, int]] = {"tracked": ([], 0, 0), "single": ([], 0, 0)}
    print(f"load average at start: {load_average()}", flush=True)
    for seed in args.seeds:
        plan = walkby.ClipPlan(
            people=args.people, returning=args.returning, fps=args.fps, seed=seed
        )
        r, truth = run_clip(args.images, plan, engine)
        for name, encodings in (("tracked", r.tracked), ("single", r.single)):
            d, right, asked = reidentification(truth["passes"], encodings)
            old = reid[name]
            reid[name] = (old[0] + d, old[1] + right, old[2] + asked)
        for key in totals:
            totals[key] += getattr(r, key)
        rows.append(
            [
                seed,
                r.frames,
                r.passes,
                r.sightings,
                r.split,
                r.merged,
                r.stray,
                r.gated,
                r.encoded,
                fmt(r.gated / max(1, r.encoded), 1),
                fmt(r.seconds, 0),
            ]
        )
        print(f"seed {seed}: {rows[-1]}", flush=True)
    print()
    print(
        markdown_table(
            [
                "seed",
                "frames",
                "passes",
                "sightings",
                "split",
                "merged",
                "stray",
                "faces in frames",
                "encoded",
                "ratio",
                "s",
            ],
            rows,
        )
    )
    print(
        f"\nall clips: {totals['passes']} passes, {totals['gated']} faces in frames, "
        f"{totals['encoded']} encoded by the tracker: "
        f"{totals['gated'] / max(1, totals['passes']):.1f} vs "
        f"{totals['encoded'] / max(1, totals['passes']):.1f} encodings per pass "
        f"({totals['gated'] / max(1, totals['encoded']):.1f}x fewer); "
        f"{totals['split']} extra sightings from split passes, {totals['merged']} sightings "
        f"merging passes, {totals['stray']} sightings in no pass"
    )
    re_rows = []
    for name, (d, right, asked) in reid.items():
        re_rows.append(
            [
                name,
                asked,
                f"{right}/{asked}",
                fmt(float(np.mean(d)) if d else None, 3),
                fmt(float(np.max(d)) if d else None, 3),
            ]
        )
    print()
    print(
        markdown_table(
            ["encoding of a pass", "returning people", "rank-1", "mean distance", "max distance"],
            re_rows,
        )
    )
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
