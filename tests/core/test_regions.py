"""The detection scheduler on a rendered walk-by clip through the real engine: still frames are
skipped, a newcomer is found within the bounded delay, crops near the tracks find the faces the
whole frame shows, and boxes found in a crop land where they are in the frame."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from facestream.core.engine import Candidate, EngineConfig, FaceEngine
from facestream.core.regions import (
    DetectionScheduler,
    Scan,
    ScheduleConfig,
    merge_regions,
    search_region,
)
from facestream.core.tracking import Tracker, iou
from facestream.schemas.messages import Box
from facestream.tools import walkby
from tests.tools.test_walkby import frames_of

# Two people, the second coming in from the right while the first is still in view.
PLAN = walkby.ClipPlan(people=2, returning=0, fps=5.0, seed=7)
CONFIG = ScheduleConfig()


@dataclass
class Run:
    """The scheduler and a tracker over the clip, and the whole frame's faces beside it."""

    truth: dict[str, Any]
    frames: list[NDArray[np.uint8]]
    scans: list[Scan]
    whole: list[list[Candidate]]


@pytest.fixture(scope="module")
def run(lfw: Path, engine: FaceEngine, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("regions")
    walkby.render(lfw, out, PLAN, engine)
    frames = frames_of(out)
    scheduler = DetectionScheduler(engine, CONFIG)
    tracker = Tracker()
    scans: list[Scan] = []
    for i, rgb in enumerate(frames):
        at = i / PLAN.fps
        scans.append(scheduler.scan(at, rgb, tracker.expected_boxes(at)))
        size = (rgb.shape[1], rgb.shape[0])
        tracker.update(at, scans[-1].candidates, partial(engine.encode, rgb), size)
    whole = [engine.candidates(rgb) for rgb in frames]
    return Run(walkby.load_truth(out), frames, scans, whole)


def test_a_still_background_skips_detection(run: Run) -> None:
    # The clip opens and ends on a second of the empty view, with sensor noise in every frame.
    first = run.truth["passes"][0]["first_frame"]
    assert first >= 4
    assert run.scans[0].full, "no reference yet: the first frame is searched whole"
    assert all(s.skipped and not s.candidates for s in run.scans[1:first])
    assert all(not faces for faces in run.whole[:first])
    # Everyone has left by the clip's last second: after a last look at the whole frame (the
    # crops of the last track saw motion), detection stops again.
    assert [s.skipped for s in run.scans[-3:]] == [False, True, True]
    # And the saving is real: most frames of the clip are not searched whole.
    assert sum(s.full for s in run.scans) < len(run.scans) / 2


def test_a_person_entering_is_found_within_the_bounded_delay(run: Run) -> None:
    bound = math.ceil(CONFIG.full_every_seconds * PLAN.fps)
    passes = run.truth["passes"]
    # The second person comes in while the first one is followed.
    assert passes[1]["first_frame"] < passes[0]["last_frame"]
    for p in passes:
        truth = {f: Box(top=t, right=r, bottom=b, left=le) for f, t, r, b, le, _ in p["boxes"]}

        def first_found(per_frame: list[list[Candidate]], truth: dict[int, Box] = truth) -> int:
            return next(
                f for f in sorted(truth) if any(iou(c.box, truth[f]) > 0.4 for c in per_frame[f])
            )

        whole = first_found(run.whole)
        scheduled = first_found([s.candidates for s in run.scans])
        assert whole <= scheduled <= whole + bound, (p["person"], whole, scheduled)


def test_crops_near_the_tracks_find_the_faces_the_whole_frame_shows(run: Run) -> None:
    cropped = [(s, whole) for s, whole in zip(run.scans, run.whole, strict=True) if s.regions]
    assert len(cropped) >= 10
    for scan, whole in cropped:
        inside = [
            w
            for w in whole
            if any(
                r.left <= w.box.left
                and w.box.right <= r.right
                and r.top <= w.box.top
                and w.box.bottom <= r.bottom
                for r in scan.regions
            )
        ]
        # HOG's image pyramid samples a crop differently from the frame: close, not equal.
        for w in inside:
            assert any(iou(c.box, w.box) > 0.6 for c in scan.candidates), (scan.at, w.box)
        for c in scan.candidates:
            assert any(iou(c.box, w.box) > 0.6 for w in whole), (scan.at, c.box)
        # Crops search a fraction of the frame.
        assert scan.searched_px < run.frames[0].shape[0] * run.frames[0].shape[1] / 2


@pytest.mark.parametrize("max_side", [1280, 480], ids=["full-size", "downscaled"])
@pytest.mark.parametrize("corner", ["top-left", "bottom-right"])
def test_boxes_found_in_a_crop_map_back_to_the_frame_at_its_edges(
    run: Run, max_side: int, corner: str
) -> None:
    engine = FaceEngine(EngineConfig(max_detect_side=max_side))
    # A frame where the face is wholly in view and found, then cut so that it sits in a
    # corner, a few pixels from two edges of the new frame.
    index, face = next(
        (i, faces[0].box)
        for i, faces in enumerate(run.whole)
        if len(faces) == 1 and faces[0].box.width > 70
    )
    rgb = run.frames[index]
    gap = 12
    if corner == "top-left":
        dy, dx = face.top - gap, face.left - gap
        frame = np.ascontiguousarray(rgb[dy:, dx:])
    else:
        dy, dx = 0, 0
        frame = np.ascontiguousarray(rgb[: face.bottom + gap, : face.right + gap])
    h, w = frame.shape[:2]
    moved = Box(
        top=face.top - dy, right=face.right - dx, bottom=face.bottom - dy, left=face.left - dx
    )
    whole = engine.candidates(frame)
    region = search_region(moved, 1.0, w, h)
    assert region.left == 0 or region.right == w  # the crop is cut by the frame's edge
    cropped = engine.candidates_in(frame, [region])
    assert len(whole) == 1 and len(cropped) == 1
    assert iou(whole[0].box, moved) > 0.6
    assert iou(cropped[0].box, moved) > 0.6
    assert iou(cropped[0].box, whole[0].box) > 0.6


def test_search_regions_are_clipped_to_the_frame_and_merged_where_they_overlap() -> None:
    box = Box(top=10, right=60, bottom=60, left=20)  # 40 wide, 50 high
    assert search_region(box, 0.5, 640, 360) == Box(top=0, right=85, bottom=85, left=0)
    a = Box(top=0, right=100, bottom=100, left=0)
    b = Box(top=50, right=180, bottom=120, left=90)
    c = Box(top=200, right=300, bottom=300, left=200)
    assert merge_regions([a, c, b]) == [Box(top=0, right=180, bottom=120, left=0), c]
    # Touching edges are not an overlap: no pixel would be searched twice.
    d = Box(top=0, right=200, bottom=100, left=100)
    assert merge_regions([a, d]) == [a, d]


def test_frames_out_of_order_are_refused(run: Run, engine: FaceEngine) -> None:
    scheduler = DetectionScheduler(engine)
    scheduler.scan(1.0, run.frames[0], [])
    with pytest.raises(ValueError, match="out of order"):
        scheduler.scan(0.5, run.frames[0], [])
