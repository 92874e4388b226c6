"""One observation per person pass: a rendered walk-by clip (real LFW faces over a background,
with a truth file) read as a camera reads a video, through :class:`VideoPasses`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facestream.core.engine import FaceEngine
from facestream.core.passes import VideoPasses
from facestream.schemas import FaceObservation, FrameMeta
from facestream.services.camera.publisher import Frame, frame_meta
from facestream.services.camera.video import frames_from_video
from facestream.tools import walkby
from tests.conftest import render_walkby

PLAN = walkby.ClipPlan(people=3, returning=1, fps=10.0, seed=5)
FPS = 5.0
START = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def clip(lfw: Path, engine: FaceEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_walkby(PLAN, lfw, engine, tmp_path_factory)


@pytest.fixture(scope="module")
def frames(clip: Path) -> list[tuple[FrameMeta, bytes]]:
    """The clip's frames as the camera publishes them (5 of each second, JPEG)."""
    read = frames_from_video(str(clip / walkby.CLIP), "door", fps=FPS, clock=lambda: START)
    return [(frame_meta("s1", f), f.data) for f in read]


@pytest.fixture(scope="module")
def truth(clip: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((clip / walkby.TRUTH).read_text())
    return loaded


def run(
    passes: VideoPasses, frames: list[tuple[FrameMeta, bytes]]
) -> tuple[list[FaceObservation], int]:
    """Every observation of the frames, the open passes' at the end; and the faces found."""
    out: list[FaceObservation] = []
    faces = 0
    for meta, data in frames:
        seen = passes.frame(meta, data)
        faces += len(seen.scan.candidates)
        out += seen.observations
    return out + passes.end_all(), faces


@pytest.fixture(scope="module")
def straight(
    engine: FaceEngine, frames: list[tuple[FrameMeta, bytes]]
) -> tuple[list[FaceObservation], int]:
    """The clip's observations, frames handled once each, in order."""
    return run(VideoPasses(engine), frames)


def at(frame: int) -> datetime:
    return START + timedelta(seconds=frame / PLAN.fps)


def within(observations: list[FaceObservation], p: dict[str, Any]) -> list[FaceObservation]:
    """The observations seen only during the truth's pass ``p`` (half a second of slack)."""
    slack = timedelta(seconds=0.5)
    return [
        o
        for o in observations
        if at(p["first_frame"]) - slack <= o.captured_at
        and o.last_seen is not None
        and o.last_seen <= at(p["last_frame"]) + slack
    ]


def test_each_pass_is_one_observation_of_its_best_frames(
    frames: list[tuple[FrameMeta, bytes]],
    truth: dict[str, Any],
    straight: tuple[list[FaceObservation], int],
) -> None:
    observations, faces = straight
    passes = truth["passes"]
    assert len(passes) == PLAN.people + PLAN.returning
    # Each pass of the truth is exactly one observation, found within the pass's time.
    for p in passes:
        found = within(observations, p)
        assert len(found) == 1, (p["person"], p["first_frame"], p["last_frame"], observations)
    assert len(observations) == len(passes)
    for o in observations:
        assert o.frames is not None and o.encoded is not None and o.averaged is not None
        assert o.last_seen is not None and o.captured_at < o.last_seen
        assert 1 <= o.averaged <= o.encoded <= 4 < o.frames
        assert o.observation_id == f"{o.frame_id}:{o.face_index}"
        assert o.frame_id in {m.frame_id for m, _ in frames}
        assert len(o.to_bytes()) < 1300  # about 1 KB per person pass
    # Far fewer encodings than faces in frames (the issue asks for at least 3x).
    encoded = sum(o.encoded or 0 for o in observations)
    assert faces >= 3 * encoded, (faces, encoded)
    assert len({o.observation_id for o in observations}) == len(observations)


def test_a_pass_resembles_its_person_more_than_anyone_else(
    engine: FaceEngine, truth: dict[str, Any], straight: tuple[list[FaceObservation], int]
) -> None:
    """The pass's encoding is of its person: nearer to the person's own photo (the one the
    clip was drawn from) than to the other people's."""
    observations, _ = straight
    photos = {p["person"]: Path(p["photo"]) for p in truth["passes"]}
    reference = {}
    for name, path in photos.items():
        (face,) = engine.faces_in(path)[:1]
        assert face.encoding is not None
        reference[name] = face.encoding
    for p in truth["passes"]:
        (o,) = within(observations, p)
        distances = {n: float(np.linalg.norm(o.vector - r)) for n, r in reference.items()}
        assert min(distances, key=lambda n: distances[n]) == p["person"], distances
        # Within dlib's own same-person tolerance (0.6), and well clear of everyone else.
        own = distances.pop(p["person"])
        assert own < 0.6 and own + 0.2 < min(distances.values()), (own, distances)


def test_the_same_frames_give_the_same_observations_after_a_restore(
    engine: FaceEngine,
    frames: list[tuple[FrameMeta, bytes]],
    straight: tuple[list[FaceObservation], int],
) -> None:
    """A batch handled again from a copy of the state (what the detector does when a batch's
    outputs were not acknowledged) gives exactly what the first attempt gave."""
    passes = VideoPasses(engine)
    out: list[FaceObservation] = []
    cut, retried = len(frames) // 3, 2 * len(frames) // 3
    for meta, data in frames[:cut]:
        out += passes.frame(meta, data).observations
    saved = passes.snapshot()
    for meta, data in frames[cut:retried]:
        passes.frame(meta, data)  # outputs "lost": the batch is handled again
    passes.restore(saved, list(passes.cameras))
    rest, _ = run(passes, frames[cut:])
    assert [o.to_bytes() for o in out + rest] == [o.to_bytes() for o in straight[0]]


def test_a_camera_that_goes_back_in_time_ends_its_passes_and_starts_again(
    engine: FaceEngine,
    frames: list[tuple[FrameMeta, bytes]],
    straight: tuple[list[FaceObservation], int],
) -> None:
    """The video sent again on one camera (a replay of its first part): the first run's open
    passes end when the second starts, and the second gives the same observations as that
    part alone (same ids: the matcher and the sink take them once)."""
    part = frames[: len(frames) // 3]
    again, _ = run(VideoPasses(engine), frames + part)
    alone, _ = run(VideoPasses(engine), part)
    assert alone
    assert [o.to_bytes() for o in again] == [o.to_bytes() for o in straight[0] + alone]


def test_stills_and_video_frames_of_one_camera(
    engine: FaceEngine, frames: list[tuple[FrameMeta, bytes]], lfw: Path
) -> None:
    """A frame marked ``end`` ends the camera's passes; an unreadable image changes nothing."""
    passes = VideoPasses(engine)
    meta, _ = frames[len(frames) // 2]
    for m, d in frames[: len(frames) // 2]:
        passes.frame(m, d)
    assert passes.cameras[("s1", "door")].open_passes >= 1
    with pytest.raises(Exception, match="image"):
        passes.frame(meta, b"not an image")
    ended = passes.end(meta.model_copy(update={"video": "end"}))
    assert ended and all(o.frames for o in ended)
    assert passes.cameras == {}
    assert passes.end(meta) == []  # nothing open: nothing to end
    # The publisher marks a video's frames; a still's meta has no ``video``.
    still = Frame(b"", "door", START, "a.jpg")
    assert frame_meta("s1", still).video is None
    assert ("video", b"frame") in meta.to_headers()
    assert all(name != "video" for name, _ in frame_meta("s1", still).to_headers())


def on_camera(
    frames: list[tuple[FrameMeta, bytes]], camera: str, hours: int
) -> list[tuple[FrameMeta, bytes]]:
    """The same frames as another camera's, ``hours`` later."""
    return [
        (
            m.model_copy(
                update={
                    "camera_id": camera,
                    "frame_id": f"{camera}-{m.frame_id}",
                    "captured_at": m.captured_at + timedelta(hours=hours),
                }
            ),
            d,
        )
        for m, d in frames
    ]


def test_past_max_cameras_the_least_recently_seen_camera_is_published_and_forgotten(
    engine: FaceEngine, frames: list[tuple[FrameMeta, bytes]]
) -> None:
    """A detector follows at most ``max_cameras``: a frame of one more camera ends the passes
    of the camera whose latest frame is the oldest (event time), which come out with that frame,
    exactly as an end record would have given them; the others go on untouched."""
    part = frames[: len(frames) // 3]
    door, aisle = on_camera(part, "door", 0), on_camera(part, "aisle", 1)
    till = on_camera(frames[:1], "till", 2)
    alone = VideoPasses(engine)
    for meta, data in door:
        alone.frame(meta, data)
    door_open = alone.end_all()
    assert door_open, "the door camera must have a pass open when it is forgotten"

    passes = VideoPasses(engine, max_cameras=2)
    for meta, data in door + aisle:
        assert passes.frame(meta, data).evicted == ()
    aisle_state = passes.snapshot_of(("s1", "aisle"))
    seen = passes.frame(*till[0])
    assert seen.evicted == (("s1", "door"),)
    assert [o.to_bytes() for o in seen.observations] == [o.to_bytes() for o in door_open]
    assert sorted(passes.cameras) == [("s1", "aisle"), ("s1", "till")]
    # The aisle camera is as it was: its passes go on.
    before, now = aisle_state[("s1", "aisle")], passes.cameras[("s1", "aisle")]
    assert (now.last, now.open_passes) == (before.last, before.open_passes)
    # The forgotten camera starts afresh with its next frame, making room in turn (the aisle
    # camera's latest frame is now the oldest).
    again = passes.frame(*door[-1])
    assert again.evicted == (("s1", "aisle"),)
    assert passes.cameras[("s1", "door")].origin == door[-1][0].captured_at
    with pytest.raises(ValueError):
        VideoPasses(engine, max_cameras=0)
