"""Detection at the edge (``camera --detect``) on the real broker: a walk-by clip's observations
(one per person pass) equal the central detector's for the same frames, and no frame is
published."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from facestream.core.detection import DetectorSettings
from facestream.core.engine import MODEL_VERSION, FaceEngine
from facestream.core.passes import VideoPasses
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import FaceObservation, decode
from facestream.services.camera.cli import camera_command
from facestream.services.camera.edge import EdgeReport, detect_and_publish
from facestream.services.camera.publisher import Frame, derive_frame_id, publish
from facestream.services.camera.video import frames_from_video
from facestream.tools import walkby
from tests.conftest import render_walkby
from tests.kafka_fixtures import (
    pipeline_env,
    read_observations,
    read_progress,
    read_topic,
    run_detector_until_idle,
)

STORE = "store-5"
CAMERA = "door"
START = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
PLAN = walkby.ClipPlan(people=2, returning=1, fps=10.0, seed=3)
FPS = 5.0


@pytest.fixture(scope="module")
def clip(lfw: Path, engine: FaceEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rendered walk-by clip (2 people, 3 passes) and its truth."""
    return render_walkby(PLAN, lfw, engine, tmp_path_factory)


@pytest.fixture(scope="module")
def detector_engine() -> FaceEngine:
    """The engine as the detector builds it from its settings (the defaults)."""
    return FaceEngine(DetectorSettings().engine_config())


def clip_frames(clip: Path) -> Iterator[Frame]:
    """The clip's frames as the camera reads them, stamped from START (so ids repeat)."""
    return frames_from_video(str(clip / walkby.CLIP), CAMERA, fps=FPS, clock=lambda: START)


def observations(records: list[Any]) -> list[FaceObservation]:
    return [decode(FaceObservation, r.value) for r in records]


def run_edge(pipeline: PipelineSettings, items: Any, engine: FaceEngine) -> EdgeReport:
    producer = make_producer(pipeline)
    try:
        passes = VideoPasses.from_settings(engine, DetectorSettings())
        return detect_and_publish(
            producer, pipeline.topics.encodings, STORE, items, engine, passes=passes
        )
    finally:
        producer.close(timeout=5)


@pytest.mark.timeout(180)
def test_edge_observations_are_the_central_detectors(
    clip: Path, pipeline: PipelineSettings, detector_engine: FaceEngine, tmp_path: Path
) -> None:
    report = run_edge(pipeline, clip_frames(clip), detector_engine)
    edge = read_observations(pipeline)
    # The camera's progress beside them, for the matcher's capture order: at most once a second
    # of the clip, never going back, and at the end just past the last frame.
    promised = [p.before for p in read_progress(pipeline)]
    assert report.progress == len(promised) and promised == sorted(set(promised))
    last_frame = max(f.captured_at for f in clip_frames(clip))
    assert promised[-1] == last_frame + timedelta(microseconds=1)
    assert len(promised) <= (last_frame - START).total_seconds() + 2
    assert read_topic(pipeline, pipeline.topics.frames) == []  # no image left the "store"

    truth = json.loads((clip / walkby.TRUTH).read_text())
    step = round(PLAN.fps / FPS)
    assert report.frames == math.ceil(truth["frames"] / step)
    assert (report.sent, report.failed, report.skipped) == (len(edge), 0, 0)
    # One observation per person pass (about 1 KB each), from the faces of many frames.
    assert report.passes == len(edge) == len(truth["passes"]), (len(edge), truth["passes"])
    assert report.faces >= 3 * len(edge)
    assert report.observation_bytes < 1300 * len(edge)

    # The same frames through the central path: published to frames.v1 and handled by the
    # detector process, which appends its observations to the same partition of encodings.v1.
    producer = make_producer(pipeline)
    try:
        sent = publish(producer, pipeline.topics.frames, STORE, clip_frames(clip))
    finally:
        producer.close(timeout=5)
    assert sent.published == report.frames and sent.ends == 1
    run_detector_until_idle(pipeline, tmp_path / "detector.log")
    both = read_observations(pipeline)  # the central detector's camera progress aside
    assert {(r.key, r.partition) for r in both} == {(STORE.encode(), edge[0].partition)}
    central = observations(both[len(edge) :])

    ours = observations(edge)
    assert [o.observation_id for o in ours] == [o.observation_id for o in central]
    for a, b in zip(ours, central, strict=True):
        assert a.model_dump(exclude={"encoding"}) == b.model_dump(exclude={"encoding"})
        assert float(np.linalg.norm(a.vector - b.vector)) < 1e-4, a.observation_id
    assert {o.model_version for o in ours} == {MODEL_VERSION}
    assert {o.store_id for o in ours} == {STORE}


@pytest.mark.timeout(120)
def test_camera_detect_command(clip: Path, pipeline: PipelineSettings) -> None:
    """The command itself: observations on encodings.v1 with ids derived from the camera's
    frame ids, the summary with the bytes saved, nothing on frames.v1."""
    video = str(clip / walkby.CLIP)
    args = ["--store", STORE, "--camera", CAMERA, "--video", video, "--detect"]
    result = CliRunner().invoke(
        camera_command, [*args, "--fps", "5", "--max-frames", "12"], env=pipeline_env(pipeline)
    )
    assert result.exit_code == 0, result.output
    records = read_observations(pipeline)
    assert records, "the clip's first 12 frames at 5 fps show someone"
    first, second = result.output.splitlines()[:2]
    assert first.startswith(
        f"published {len(records)} observations to {pipeline.topics.encodings} (store {STORE}) "
        "from 12 frames"
    ), result.output
    # "<observations> bytes of observations (and <progress> of <n> camera progress records)
    # instead of <frames> bytes of frames; ..."
    sizes = [int(word) for word in second.replace("(", " ").split() if word.isdigit()]
    assert sizes[0] == sum(len(r.key) + len(r.value) for r in records)
    assert sizes[2] == len(read_progress(pipeline)) > 0
    assert 0 < sizes[0] + sizes[1] < sizes[3] / 5, second  # a small part of the frames
    assert read_topic(pipeline, pipeline.topics.frames) == []

    assert {r.key for r in records} == {STORE.encode()}
    for o in observations(records):
        # The frame id is the camera's: store, camera, time and the frame's place in the file,
        # of the pass's best frame. A file is stamped from when the command started and a pass
        # starts (captured_at) at one of the 12 frames, so both places are looked for.
        assert o.frames is not None and o.last_seen is not None
        ids = {
            derive_frame_id(
                STORE,
                CAMERA,
                o.captured_at + timedelta(seconds=(k - a) / FPS),
                f"{walkby.CLIP}#{2 * k}",
            )
            for a in range(12)
            for k in range(12)
        }
        assert o.frame_id in ids
        assert o.observation_id == f"{o.frame_id}:{o.face_index}"


@pytest.mark.timeout(60)
def test_unreadable_frames_are_skipped_and_the_rest_observed(
    pipeline: PipelineSettings, detector_engine: FaceEngine, multi: Path
) -> None:
    """A frame the detector would dead-letter is skipped at the edge: counted, not published."""
    photo = (multi / "two_people.jpg").read_bytes()
    items = [
        Frame(b"not an image", CAMERA, START, "broken.jpg"),
        Frame(photo, CAMERA, START, "two_people.jpg"),
    ]
    report = run_edge(pipeline, items, detector_engine)
    assert (report.frames, report.skipped, report.skipped_sources) == (1, 1, ["broken.jpg"])
    obs = observations(read_observations(pipeline))
    frame_id = derive_frame_id(STORE, CAMERA, START, "two_people.jpg")
    assert [o.observation_id for o in obs] == [f"{frame_id}:0", f"{frame_id}:1"]
    assert report.sent == 2 and report.faces == 2


def test_detect_usage_errors(tmp_path: Path) -> None:
    """Refused before any model is loaded or Kafka reached."""
    runner = CliRunner()
    video = ["--camera", "c1", "--video", str(tmp_path / "none.mp4"), "--detect"]
    cases: list[tuple[list[str], dict[str, str], int, str]] = [
        (video, {}, 2, "Missing option '--store'"),
        (["--store", STORE, "--detect"], {}, 2, "exactly one of"),
        (["--store", STORE, "--video", "x.mp4", "--detect"], {}, 1, "--video needs --camera"),
        (
            ["--store", STORE, *video, "--key-by", "camera"],
            {},
            2,
            "with --detect observations are keyed by store",
        ),
        (
            ["--store", STORE, *video],
            {"FACESTREAM_DETECTOR_FALLBACKS": "sideways"},
            2,
            "invalid settings: FACESTREAM_DETECTOR_FALLBACKS",
        ),
        (
            ["--store", STORE, *video],
            {"FACESTREAM_DETECTOR_MIN_FACE_PIX": "60"},
            2,
            "unknown variable FACESTREAM_DETECTOR_MIN_FACE_PIX",
        ),
    ]
    for args, env, code, message in cases:
        result = runner.invoke(camera_command, args, env=env)
        assert result.exit_code == code, (args, env, result.output)
        assert message in result.output, (args, env, result.output)
