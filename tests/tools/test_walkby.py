"""Walk-by clips rendered from the real photos: the video is readable, the truth says where each
face is, and the rendered faces are still recognisable as the people in the photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from facestream.core.engine import FaceEngine, face_distance
from facestream.core.images import load_image
from facestream.core.tracking import iou
from facestream.schemas.messages import Box
from facestream.tools import walkby

PLAN = walkby.ClipPlan(people=3, returning=1, fps=5.0, seed=7)


@pytest.fixture(scope="module")
def clip(lfw: Path, engine: FaceEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("walkby")
    walkby.render(lfw, out, PLAN, engine)
    return out


def frames_of(folder: Path) -> list[NDArray[np.uint8]]:
    """Every frame of the clip in ``folder``, RGB (contiguous: dlib wants it so)."""
    import cv2

    capture = cv2.VideoCapture(str(folder / walkby.CLIP))
    frames: list[NDArray[np.uint8]] = []
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return frames
            frames.append(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8))
    finally:
        capture.release()


def test_the_clip_holds_every_pass_the_truth_lists(clip: Path) -> None:
    truth = walkby.load_truth(clip)
    frames = frames_of(clip)
    assert len(frames) == truth["frames"]
    assert frames[0].shape == (PLAN.height, PLAN.width, 3)
    passes = truth["passes"]
    assert len(passes) == PLAN.people + PLAN.returning
    assert len(truth["people"]) == PLAN.people
    for p in passes:
        assert 0 <= p["first_frame"] < p["last_frame"] < truth["frames"]
        assert p["boxes"], "every pass shows its face wholly in view at some point"
        assert all(p["first_frame"] <= b[0] <= p["last_frame"] for b in p["boxes"])
    # The returning person comes back later, with another photo.
    by_person: dict[str, list[dict[str, object]]] = {}
    for p in passes:
        by_person.setdefault(p["person"], []).append(p)
    twice = [ps for ps in by_person.values() if len(ps) == 2]
    assert len(twice) == PLAN.returning
    a, b = twice[0]
    assert a["photo"] != b["photo"]
    assert int(str(b["first_frame"])) > int(str(a["last_frame"]))
    # Never more people in view than the plan allows.
    for frame in range(truth["frames"]):
        showing = [p for p in passes if p["first_frame"] <= frame <= p["last_frame"]]
        assert len(showing) <= PLAN.max_in_view


def test_faces_in_the_clip_are_where_the_truth_says_and_still_recognisable(
    clip: Path, engine: FaceEngine
) -> None:
    truth = walkby.load_truth(clip)
    frames = frames_of(clip)
    for p in truth["passes"]:
        clear = [b for b in p["boxes"] if not b[5]]
        frame, top, right, bottom, left, _ = clear[len(clear) // 2]
        expected = Box(top=top, right=right, bottom=bottom, left=left)
        faces = engine.faces(frames[frame])
        found = max(faces, key=lambda f: iou(f.box, expected), default=None)
        assert found is not None and iou(found.box, expected) > 0.4, (p["person"], frame)
        assert found.encoding is not None
        photo = engine.faces(load_image(Path(p["photo"])))[0]
        assert photo.encoding is not None
        # Scaled, blurred and over a new background, but the same face as in the photo.
        assert face_distance(found.encoding, photo.encoding) < 0.45, p["person"]


def test_the_same_seed_renders_the_same_truth(
    clip: Path, lfw: Path, engine: FaceEngine, tmp_path: Path
) -> None:
    again = walkby.render(lfw, tmp_path, PLAN, engine)
    assert json.loads((clip / walkby.TRUTH).read_text()) == again.as_dict()
    assert len(frames_of(tmp_path)) == again.frames


def test_a_folder_without_enough_people_is_refused(
    lfw: Path, engine: FaceEngine, tmp_path: Path
) -> None:
    one = tmp_path / "images"
    (one / "Someone").mkdir(parents=True)
    source = next(p for p in sorted(lfw.iterdir()) if p.is_dir())
    photo = sorted(source.iterdir())[0]
    (one / "Someone" / photo.name).symlink_to(photo)
    with pytest.raises(walkby.NotEnoughPhotos):
        walkby.render(one, tmp_path / "out", walkby.ClipPlan(people=2, returning=0), engine)
