"""Face tracks: one sighting per pass, encoded from a few of its best frames.

The rules on made-up boxes first (cheap and exact), then a walk-by clip rendered from the real
photos, through the real face engine."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facestream.core.engine import Candidate, Encoding, FaceEngine, Quality, face_distance
from facestream.core.images import load_image
from facestream.core.tracking import Encoder, Sighting, TrackConfig, Tracker, utility
from facestream.schemas.messages import Box
from facestream.tools import walkby


def face(left: int, top: int = 100, size: int = 60, sharp: float = 60.0) -> Candidate:
    box = Box(top=top, right=left + size, bottom=top + size, left=left)
    quality = Quality(size_px=size, sharpness=sharp, score=1.0)
    return Candidate(box, "hog", quality, rect=None)


def person_encoder(people: dict[int, Encoding]) -> tuple[list[int], Encoder]:
    """An encoder that knows who is where: the encoding of the person whose lane (box top)
    the face is in; records how many faces it encoded."""
    calls: list[int] = []

    def encode(faces: Sequence[Candidate]) -> list[Encoding]:
        calls.append(len(faces))
        return [people[f.box.top] for f in faces]

    return calls, encode


def unit(seed: int) -> Encoding:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return (v / np.linalg.norm(v) * 0.6).astype(np.float32)


def test_a_walk_through_is_one_sighting_with_a_few_encodings() -> None:
    tracker = Tracker(TrackConfig(max_encodings=4))
    calls, encode = person_encoder({100: unit(1)})
    out: list[Sighting] = []
    for i in range(40):  # 4 s at 10 fps, moving right and growing
        out += tracker.update(i / 10, [face(10 + 12 * i, size=50 + i)], encode)
    assert out == []
    out += tracker.update(5.5, [], encode)
    assert len(out) == 1
    s = out[0]
    assert s.frames == 40 and s.first_seen == 0.0 and s.last_seen == pytest.approx(3.9)
    assert 1 <= len(s.encodings) <= 4 and sum(calls) == tracker.encoded == len(s.encodings)
    # Encoded only when better than before: utilities rise along the encodings.
    utilities = [e.utility for e in s.encodings]
    assert utilities == sorted(utilities)
    assert s.representative.box.width == max(e.box.width for e in s.encodings)


def test_a_blurry_face_is_not_encoded_and_a_track_without_encodings_publishes_nothing() -> None:
    tracker = Tracker()
    calls, encode = person_encoder({100: unit(1)})
    blurry = Candidate(face(10).box, "hog", Quality(60, 2.0, 1.0, ("blurry",)), rect=None)
    assert tracker.update(0.0, [blurry], encode) == []
    assert tracker.update(3.0, [], encode) == []
    assert calls == [] and tracker.open_tracks == 0


def test_a_gap_ends_a_track_and_a_long_stay_is_published_in_parts() -> None:
    tracker = Tracker(TrackConfig(max_gap_seconds=1.0, max_open_seconds=5.0))
    _, encode = person_encoder({100: unit(1)})
    out: list[Sighting] = []
    for i in range(120):  # standing still for 12 s
        out += tracker.update(i / 10, [face(200)], encode)
    assert [s.pass_index for s in out] == [0, 1]
    assert all(s.track == out[0].track for s in out)
    assert out[1].first_seen == pytest.approx(out[0].last_seen + 0.1, abs=0.11)
    out += tracker.flush()
    assert [s.pass_index for s in out] == [0, 1, 2]
    # Back after a gap longer than max_gap: a new track.
    tracker.update(20.0, [face(200)], encode)
    assert tracker.flush()[0].track != out[0].track


def test_a_face_cut_by_the_edge_spends_one_encoding_at_most() -> None:
    """Entering from the left edge: the first good face is encoded (it may be all there is),
    then nothing more until the face is wholly in view."""
    tracker = Tracker(TrackConfig(max_encodings=4))
    _, encode = person_encoder({100: unit(1)})
    for i in range(20):
        box = face(-50 + 10 * i, size=60 + i).box
        clipped = Box(top=box.top, right=box.right, bottom=box.bottom, left=max(0, box.left))
        seen = Candidate(clipped, "hog", Quality(clipped.width, 60.0, 1.0), rect=None)
        tracker.update(i / 10, [seen], encode, frame=(640, 360))
    (s,) = tracker.flush()
    assert s.encodings[0].box.left == 0
    assert all(e.box.left > 0 for e in s.encodings[1:])
    assert s.representative.box.left > 0


def test_a_track_handed_to_someone_else_by_boxes_is_split_by_the_identity_check() -> None:
    """The boxes run on without a break, but from 2 s on they are someone else's face (one
    person leaves by the edge where another comes in): the periodic check splits the track."""
    a, b = unit(1), unit(2)
    tracker = Tracker(TrackConfig(check_seconds=1.0))

    def encode(faces: Sequence[Candidate]) -> list[Encoding]:
        return [a if f.box.left < 20 + 5 * 20 else b for f in faces]

    out: list[Sighting] = []
    for i in range(40):
        out += tracker.update(i / 10, [face(20 + 5 * i)], encode)
    out += tracker.flush()
    assert len(out) == 2
    first, second = out
    assert all(np.array_equal(e.encoding, a) for e in first.encodings)
    assert all(np.array_equal(e.encoding, b) for e in second.encodings)
    assert first.last_seen < second.first_seen <= 3.0
    assert first.frames + second.frames == 40
    assert first.track != second.track


def test_frames_out_of_order_are_refused() -> None:
    tracker = Tracker()
    _, encode = person_encoder({100: unit(1)})
    tracker.update(1.0, [], encode)
    with pytest.raises(ValueError, match="out of order"):
        tracker.update(0.5, [], encode)


def test_two_people_crossing_keep_their_own_tracks() -> None:
    """Two faces walk towards each other in lanes 10 px apart: while their boxes overlap both
    tracks, the encodings decide who is who."""
    a, b = unit(1), unit(2)
    tracker = Tracker(TrackConfig(min_iou=0.1))
    _, encode = person_encoder({100: a, 110: b})
    out: list[Sighting] = []
    for i in range(30):
        faces = [face(20 + 15 * i, top=100), face(455 - 15 * i, top=110)]
        out += tracker.update(i / 10, faces, encode)
    out += tracker.flush()
    assert len(out) == 2
    for s in out:
        # Every encoding of a track is one person's: nobody swapped tracks at the crossing.
        assert len({e.box.top for e in s.encodings}) == 1
        assert all(np.array_equal(e.encoding, s.encodings[0].encoding) for e in s.encodings)
        assert s.frames == 30


def test_utility_prefers_larger_sharper_faces() -> None:
    small, big = face(0, size=50).quality, face(0, size=120).quality
    assert utility(big) > utility(small)
    assert utility(face(0, sharp=10).quality) < utility(face(0, sharp=60).quality)
    assert utility(face(0, size=300).quality) == utility(face(0, size=150).quality)


# -- a rendered walk-by clip through the real engine ---------------------------------------


def test_each_pass_of_a_walk_by_clip_is_one_sighting_of_its_person(
    lfw: Path, engine: FaceEngine, tmp_path: Path
) -> None:
    import cv2

    plan = walkby.ClipPlan(people=3, returning=1, fps=5.0, seed=7)
    clip = walkby.render(lfw, tmp_path, plan, engine)
    truth = walkby.load_truth(tmp_path)
    tracker = Tracker()
    sightings: list[tuple[Sighting, int]] = []
    gated = 0
    capture = cv2.VideoCapture(str(tmp_path / walkby.CLIP))
    for frame in range(clip.frames):
        ok, bgr = capture.read()
        assert ok
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
        faces = engine.candidates(rgb)
        gated += sum(f.quality.passed for f in faces)
        done = tracker.update(
            frame / plan.fps, faces, partial(engine.encode, rgb), (rgb.shape[1], rgb.shape[0])
        )
        sightings += [(s, frame) for s in done]
    capture.release()
    sightings += [(s, clip.frames) for s in tracker.flush()]

    passes = truth["passes"]
    assert len(sightings) == len(passes)
    found = sorted(_pass_of(s, passes, plan.fps) for s, _ in sightings)
    assert found == list(range(len(passes))), "one sighting per pass, each of its own pass"
    for s, published in sightings:
        p = passes[_pass_of(s, passes, plan.fps)]
        # Published within max_gap of the pass leaving the view.
        assert published <= p["last_frame"] + 2 * plan.fps
        reference = engine.faces(load_image(Path(p["photo"])))[0].encoding
        assert reference is not None
        assert face_distance(s.encoding, reference) < 0.4, p["person"]
    # Far fewer encodings than faces in frames (the target is 3x fewer).
    assert tracker.encoded * 3 <= gated, (tracker.encoded, gated)


def _pass_of(s: Sighting, passes: list[dict[str, Any]], fps: float) -> int:
    """The truth pass whose face box at the sighting's best frame overlaps its box."""
    frame = round(s.representative.at * fps)
    box = s.representative.box
    for i, p in enumerate(passes):
        for f, top, right, bottom, left, _ in p["boxes"]:
            truth = Box(top=top, right=right, bottom=bottom, left=left)
            if f == frame and walkby.overlap(truth, box):
                return i
    raise AssertionError(f"no pass at frame {frame} where the sighting's face is")


def test_a_person_standing_in_view_does_not_hold_the_promise_back() -> None:
    """What a camera promises the matcher (``open_seen``, core.passes.promise): no open pass
    ends before the earliest time one was last seen. A person standing in view for minutes (a
    cashier) has a pass that began long ago but is seen in every frame, so the promise keeps
    up with the frames; one who has just left holds it back by the gap at most."""
    _, encode = person_encoder({100: unit(1), 300: unit(2)})
    tracker = Tracker(TrackConfig())
    for i in range(80):  # 8 s: the cashier in every frame, a shopper from 2 s to 5 s
        at = i / 10
        faces = [face(40, top=100)]
        if 2.0 <= at <= 5.0:
            faces.append(face(100 + 20 * i, top=300))
        tracker.update(at, faces, encode)
        if at >= 1.0:
            assert tracker.open_seen == at or (5.0 < at <= 6.0 and tracker.open_seen == 5.0)
    assert tracker.open_tracks == 1  # the shopper's pass ended a gap after they left
