"""The detector stage: handler logic on fake records, then the real runner on the real broker."""

from __future__ import annotations

import io
import logging
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from PIL import Image
from prometheus_client import REGISTRY

from facestream.core.engine import MODEL_VERSION, EngineConfig, FaceEngine
from facestream.core.passes import VideoPasses
from facestream.runtime.logs import FORMAT, ContextFilter, log_context
from facestream.runtime.runner import Poison, Record, Runner, make_producer, where
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import CameraProgress, DeadLetter, FaceObservation, FrameMeta, decode
from facestream.schemas.keys import PROGRESS, frame_key, partition_for
from facestream.services.detector.cli import detector_command
from facestream.services.detector.worker import DetectorHandler, DetectorSettings
from tests.kafka_fixtures import (
    PARTITIONS,
    pipeline_env,
    read_observations,
    read_progress,
    read_topic,
    run_detector_until_idle,
)

STORE = "store-7"
CAMERA = "door-1"
KEY = frame_key(STORE, CAMERA).encode()
T0 = datetime(2024, 5, 17, 9, 30, tzinfo=UTC)


def fake(value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]] | None) -> Record:
    return Record("frames.v1", 0, 0, key, value, headers)


def meta(
    frame_id: str = "f-1", store: str = STORE, at: datetime = T0, camera: str = CAMERA
) -> FrameMeta:
    return FrameMeta(frame_id=frame_id, store_id=store, camera_id=camera, captured_at=at)


def frame(value: bytes | None, frame_id: str = "f-1", **headers: str) -> Record:
    """A record as the camera publishes it (key ``store/camera``); ``headers`` override single
    header values."""
    pairs = dict(meta(frame_id).to_headers())
    pairs.update({k: v.encode() for k, v in headers.items()})
    return fake(value, KEY, list(pairs.items()))


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def wall() -> bytes:
    """A 480p frame of an empty entrance: a textured grey wall."""
    rng = np.random.default_rng(7)
    pixels = rng.normal(120, 12, (480, 640, 3)).clip(0, 255).astype(np.uint8)
    return jpeg(Image.fromarray(pixels))


def gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(out, "GIF")
    return out.getvalue()


def pixel_bomb() -> bytes:
    """A 100-byte PNG whose header claims 60000x60000 pixels (3.6 gigapixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def detector_engine() -> FaceEngine:
    """The engine as the detector runs it (no fallbacks: see DetectorSettings.fallbacks)."""
    return FaceEngine(EngineConfig(fallbacks=()))


@pytest.fixture(scope="module")
def handler(detector_engine: FaceEngine) -> DetectorHandler:
    """The faces alone: camera progress has its own tests."""
    return DetectorHandler(detector_engine, encodings_topic="encodings.v1", progress=False)


# -- the handler, no broker ------------------------------------------------------------------


def test_two_people_give_two_observations(handler: DetectorHandler, multi: Path) -> None:
    before = metric("facestream_frames_total", result="faces")
    outputs = handler.handle(frame((multi / "two_people.jpg").read_bytes(), "frame-42"))

    assert len(outputs) == 2
    assert {o.topic for o in outputs} == {"encodings.v1"}
    assert {o.key for o in outputs} == {STORE.encode()}  # the store's, not the frame's key
    obs = [decode(FaceObservation, o.value) for o in outputs]
    assert [o.observation_id for o in obs] == ["frame-42:0", "frame-42:1"]
    for o in obs:
        assert (o.frame_id, o.store_id, o.camera_id, o.captured_at) == (
            "frame-42",
            STORE,
            CAMERA,
            T0,
        )
        assert o.model_version == MODEL_VERSION and o.detector == "hog"
        assert o.size_px >= 40 and o.sharpness > 4.0
        assert o.box.right - o.box.left >= o.size_px
        vec = o.vector
        assert vec.shape == (128,) and np.isfinite(vec).all()
        assert 0.2 < float(np.linalg.norm(vec)) < 2.0
    # Two different people: their encodings are far apart (dlib's tolerance is 0.6).
    assert float(np.linalg.norm(obs[0].vector - obs[1].vector)) > 0.6
    assert metric("facestream_frames_total", result="faces") == before + 1


def test_empty_frame_gives_nothing(handler: DetectorHandler) -> None:
    before = metric("facestream_frames_total", result="no_face")
    assert handler.handle(frame(wall())) == []
    assert metric("facestream_frames_total", result="no_face") == before + 1


def test_faces_failing_the_gate_are_counted_not_sent(multi: Path) -> None:
    strict = FaceEngine(EngineConfig(min_face_px=10_000, fallbacks=()))
    gated = DetectorHandler(strict, encodings_topic="encodings.v1", progress=False)
    before = metric("facestream_faces_rejected_total", reason="too_small")
    frames_before = metric("facestream_frames_total", result="rejected")

    assert gated.handle(frame((multi / "two_people.jpg").read_bytes())) == []
    assert metric("facestream_faces_rejected_total", reason="too_small") == before + 2
    assert metric("facestream_frames_total", result="rejected") == frames_before + 1


def _truncated(multi: Path) -> bytes:
    data = (multi / "obama-240p.jpg").read_bytes()
    return data[: len(data) // 2]


POISON: list[tuple[str, Any, str]] = [
    ("not an image", lambda m: frame(b"GET / HTTP/1.1\r\n\r\n"), "image_not_an_image"),
    ("empty value", lambda m: frame(None), "image_empty"),
    ("truncated JPEG", lambda m: frame(_truncated(m)), "image_truncated"),
    ("GIF", lambda m: frame(gif()), "image_unsupported_format"),
    ("pixel bomb", lambda m: frame(pixel_bomb()), "image_too_large"),
    ("no headers", lambda m: fake(wall(), KEY, None), "invalid"),
    ("naive time", lambda m: frame(wall(), captured_at="2024-05-17T09:30:00"), "invalid"),
    ("bad store id", lambda m: frame(wall(), store_id="a/b"), "invalid"),
    ("unknown version", lambda m: frame(wall(), v="2"), "unknown_version"),
    (
        "other store key",
        lambda m: fake(wall(), b"store-8/door-1", meta().to_headers()),
        "key_mismatch",
    ),
    (
        "other camera key",
        lambda m: fake(wall(), b"store-7/door-2", meta().to_headers()),
        "key_mismatch",
    ),
    (
        "other store, old key form",
        lambda m: fake(wall(), b"store-8", meta().to_headers()),
        "key_mismatch",
    ),
    ("camera alone", lambda m: fake(wall(), CAMERA.encode(), meta().to_headers()), "key_mismatch"),
    ("no key", lambda m: fake(wall(), None, meta().to_headers()), "key_mismatch"),
]


@pytest.mark.parametrize(("make", "reason"), [p[1:] for p in POISON], ids=[p[0] for p in POISON])
def test_poison(handler: DetectorHandler, multi: Path, make: Any, reason: str) -> None:
    with pytest.raises(Poison) as caught:
        handler.handle(make(multi))
    assert caught.value.reason == reason
    assert caught.value.message


def test_both_key_forms_are_accepted_and_counted(handler: DetectorHandler, multi: Path) -> None:
    """``store/camera``, and the store id alone of cameras not yet upgraded; observations are
    keyed by store either way."""
    photo = (multi / "obama-240p.jpg").read_bytes()
    camera = metric("facestream_frame_keys_total", form="camera")
    store = metric("facestream_frame_keys_total", form="store")

    new = handler.handle(fake(photo, KEY, meta("new-key").to_headers()))
    old = handler.handle(fake(photo, STORE.encode(), meta("old-key").to_headers()))

    assert [o.key for o in new] == [o.key for o in old] == [STORE.encode()]
    assert decode(FaceObservation, old[0].value).observation_id == "old-key:0"
    assert metric("facestream_frame_keys_total", form="camera") == camera + 1
    assert metric("facestream_frame_keys_total", form="store") == store + 1


@pytest.fixture(scope="module")
def video_records(datasets: Path) -> list[Record]:
    """The real hamilton clip as a camera publishes it (5 frames a second, marked as video,
    keyed store/camera), then the end-of-video record, at offsets 0.. of one partition."""
    from facestream.services.camera.publisher import VideoEnds, frame_meta
    from facestream.services.camera.video import frames_from_video

    clip = datasets / "video" / "short_hamilton_clip.mp4"
    ends = VideoEnds()
    metas = []
    for f in frames_from_video(str(clip), CAMERA, fps=5.0, clock=lambda: T0):
        m = frame_meta(STORE, f)
        ends.saw(m, f.source)
        metas.append((m, f.data))
    (end,) = ends.ends()
    metas.append((end, b""))
    return [
        Record("frames.v1", 0, offset, KEY, data, m.to_headers())
        for offset, (m, data) in enumerate(metas)
    ]


def video_handler(engine: FaceEngine, progress: bool = False) -> DetectorHandler:
    """Passes on video; camera progress only when asked (it has its own test)."""
    settings = DetectorSettings()
    return DetectorHandler(
        engine,
        encodings_topic="encodings.v1",
        passes=VideoPasses.from_settings(engine, settings),
        progress=progress,
    )


def test_after_each_commit_each_camera_promises_what_its_committed_frames_allow(
    detector_engine: FaceEngine, video_records: list[Record]
) -> None:
    """The camera progress the matcher orders a store's faces by (services/matcher/ordering):
    published only after a commit, never going back, and kept: no observation published after
    a promise ends before it (a pass at its last sighting), although a pass is published a
    gap after it. While a pass is open the promise stays at its last sighting, at or behind
    the latest frame."""
    handler = video_handler(detector_engine, progress=True)
    assert handler.after_commit() == []  # nothing committed yet
    stream: list[tuple[str, datetime]] = []  # what encodings.v1 would hold, in order
    behind = 0
    for i, rec in enumerate(video_records):
        outputs = handler.handle(rec)
        if i == 0:  # the camera greeted before its first face, from its first frame
            hello = decode(CameraProgress, outputs[0].value)
            assert outputs[0].headers == [PROGRESS] and hello.before == T0
            stream.append(("promise", hello.before))
            outputs = outputs[1:]
        for out in outputs:
            stream.append(("face", decode(FaceObservation, out.value).ends_at))
        handler.before_commit()
        for out in handler.after_commit():
            assert out.headers == [PROGRESS] and out.key == STORE.encode()
            promise = decode(CameraProgress, out.value)
            assert (promise.store_id, promise.camera_id) == (STORE, CAMERA)
            stream.append(("promise", promise.before))
            behind += promise.before <= FrameMeta.from_headers(rec.headers).captured_at
    promises = [t for kind, t in stream if kind == "promise"]
    faces = [t for kind, t in stream if kind == "face"]
    assert len(faces) >= 3 and len(promises) >= 5
    assert promises == sorted(set(promises))  # each moves on, none goes back
    for i, (kind, at) in enumerate(stream):
        if kind == "face":
            assert all(at >= t for k, t in stream[:i] if k == "promise")
    assert behind > 0  # held back by open passes: not past the latest frame
    # The end record closed every pass: the last promise is just past the last frame's time.
    last_frame = FrameMeta.from_headers(video_records[-2].headers).captured_at
    assert promises[-1] == last_frame + timedelta(microseconds=1)
    # Off (while old matchers still run): no progress.
    quiet = DetectorHandler(detector_engine, encodings_topic="encodings.v1", progress=False)
    quiet.handle(video_records[0])
    quiet.before_commit()
    assert quiet.after_commit() == []


def test_video_frames_are_observed_once_per_pass(
    detector_engine: FaceEngine, video_records: list[Record]
) -> None:
    """A video camera's frames give one observation per person pass, published when the pass
    ends or the video does; a batch handled again (its outputs were not acknowledged) goes
    back to the last commit and gives the same observations; a partition that moves away
    first publishes its cameras' open passes as of the last commit."""
    straight = video_handler(detector_engine)
    expected = [o.value for r in video_records for o in straight.handle(r)]
    observations = [decode(FaceObservation, v) for v in expected]
    faces_in_frames = metric("facestream_video_frames_total", search="full")
    assert observations, "the clip shows several people"
    assert len(observations) < len(video_records) // 2
    assert all(o.frames and o.last_seen and o.store_id == STORE for o in observations)
    assert len({o.observation_id for o in observations}) == len(observations)
    assert faces_in_frames > 0

    # Committed after the first third; the second third handled, not acknowledged, handled
    # again with the rest.
    handler = video_handler(detector_engine)
    third = len(video_records) // 3
    out = [o.value for r in video_records[:third] for o in handler.handle(r)]
    handler.before_commit()
    for r in video_records[third : 2 * third]:
        handler.handle(r)
    out += [o.value for r in video_records[third:] for o in handler.handle(r)]
    assert out == expected

    # Before the partition goes (a rebalance, a stop), the open passes are ended as of the last
    # commit and published: what an end record right after the committed frames would give.
    reference = video_handler(detector_engine)
    for r in video_records[:third]:
        reference.handle(r)
    ended_then = [o.value for o in reference.handle(video_records[-1])]
    moving = video_handler(detector_engine)
    for r in video_records[:third]:
        moving.handle(r)
    moving.before_commit()
    for r in video_records[third : 2 * third]:
        moving.handle(r)  # not committed: the next owner handles these frames again
    assert moving.drain([TopicPartition("frames.v1", 1)]) == []  # not this camera's partition
    drained = [o.value for o in moving.drain([TopicPartition("frames.v1", 0)])]
    assert drained == ended_then and drained
    assert moving.passes is not None and moving.passes.cameras == {}
    assert moving.drain(None) == []  # nothing is owed twice

    # Revoked with passes open and not drained (drain failed): dropped and counted.
    dropped = metric("facestream_passes_total", outcome="dropped")
    moved = video_handler(detector_engine)
    for r in video_records[: 2 * third]:
        moved.handle(r)
    assert moved.passes is not None
    open_passes = sum(c.open_passes for c in moved.passes.cameras.values())
    assert open_passes
    moved.on_revoked([TopicPartition("frames.v1", 0)])
    assert moved.passes.cameras == {}
    assert metric("facestream_passes_total", outcome="dropped") == dropped + open_passes


def test_a_detector_at_its_camera_bound_publishes_the_oldest_camera(
    detector_engine: FaceEngine, video_records: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FACESTREAM_DETECTOR_VIDEO_MAX_CAMERAS=1: a frame of a second camera publishes the first
    camera's open passes with its own outputs (what a drain would have), counts it, and the
    forgotten camera is owed nothing more: a drain or a rewind does not bring it back."""
    monkeypatch.setenv("FACESTREAM_DETECTOR_VIDEO_MAX_CAMERAS", "1")
    settings = DetectorSettings()
    assert settings.video_max_cameras == 1
    third = len(video_records) // 3
    reference = video_handler(detector_engine)
    for r in video_records[:third]:
        reference.handle(r)
    owed = [o.value for o in reference.handle(video_records[-1])]
    assert owed

    handler = DetectorHandler(
        detector_engine,
        encodings_topic="encodings.v1",
        passes=VideoPasses.from_settings(detector_engine, settings),
        progress=False,
    )
    for r in video_records[:third]:
        handler.handle(r)
    handler.before_commit()
    evicted = metric("facestream_video_cameras_evicted_total")
    # A frame of another camera of the store, later, on another partition.
    first = video_records[third]
    meta = FrameMeta.from_headers(first.headers).model_copy(
        update={"camera_id": "aisle", "frame_id": "aisle-1"}
    )
    other = Record("frames.v1", 1, 0, f"{STORE}/aisle".encode(), first.value, meta.to_headers())
    out = [o.value for o in handler.handle(other)]
    assert out[-len(owed) :] == owed
    assert metric("facestream_video_cameras_evicted_total") == evicted + 1
    assert handler.passes is not None and list(handler.passes.cameras) == [(STORE, "aisle")]
    assert handler.drain([TopicPartition("frames.v1", 0)]) == []


def test_video_frames_without_passes_are_stills(
    handler: DetectorHandler, video_records: list[Record]
) -> None:
    """With passes off (FACESTREAM_DETECTOR_VIDEO_PASSES=false) a video frame's faces are
    observed one by one and the end-of-video record is taken and ignored, not dead-lettered."""
    assert handler.passes is None
    assert handler.handle(video_records[-1]) == []
    faces = [o for r in video_records[:10] for o in handler.handle(r)]
    assert faces
    assert all(decode(FaceObservation, o.value).frames is None for o in faces)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DetectorSettings().fallbacks == ()
    monkeypatch.setenv("FACESTREAM_DETECTOR_FALLBACKS", "upsample, pad")
    monkeypatch.setenv("FACESTREAM_DETECTOR_MIN_FACE_PX", "60")
    cfg = DetectorSettings().engine_config()
    assert cfg.fallbacks == ("upsample", "pad") and cfg.min_face_px == 60
    monkeypatch.setenv("FACESTREAM_DETECTOR_FALLBACKS", "sideways")
    with pytest.raises(ValueError, match="fallbacks"):
        DetectorSettings()


def test_log_lines_carry_the_record_context(handler: DetectorHandler) -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    collect = Collect()
    collect.setFormatter(logging.Formatter(FORMAT))
    collect.addFilter(ContextFilter())
    logger = logging.getLogger("facestream.services.detector.worker")
    level = logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.DEBUG)
    record = frame(wall(), "frame-9")
    try:
        with log_context(where(record)):
            handler.handle(record)
        handler.handle(record)  # outside a context (a test, a benchmark): no brackets
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    assert lines[0].endswith(" [frames.v1[0]@0 store=store-7 camera=door-1 frame=frame-9]")
    assert lines[1].endswith("0 observations")


def test_start_up_errors_are_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "1")  # what the command sets; undone after the test
    cli = CliRunner()
    args = ["--max-idle-seconds", "1"]
    env = {"FACESTREAM_METRICS_PORT": "0"}
    fallbacks = {**env, "FACESTREAM_DETECTOR_FALLBACKS": "sideways"}
    bad = cli.invoke(detector_command, args, env=fallbacks)
    assert bad.exit_code == 2, bad.output
    assert "invalid settings: FACESTREAM_DETECTOR_FALLBACKS: " in bad.output
    level = cli.invoke(detector_command, [*args, "--log-level", "loud"], env=env)
    assert level.exit_code == 2, level.output
    assert "unknown log level 'loud'" in level.output
    # Kafka out of reach is the entry point's, the same for every worker: see the sink's test.


# -- on the broker ---------------------------------------------------------------------------


def committed_lag(settings: PipelineSettings, group: str, topic: str) -> int:
    """How many records of ``topic`` the group has not committed yet."""
    # A consumer with the group id reads the group's offsets without joining it.
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        end = consumer.end_offsets(parts)
        return sum(end[tp] - (consumer.committed(tp) or 0) for tp in parts)
    finally:
        consumer.close(autocommit=False)


def send_all(settings: PipelineSettings, records: list[Record]) -> list[int]:
    """Publish records to the frames topic in order; their offsets."""
    producer = make_producer(settings)
    try:
        futures = [
            producer.send(settings.topics.frames, value=r.value, key=r.key, headers=r.headers)
            for r in records
        ]
        producer.flush(timeout=20)
        return [f.get(timeout=20).offset for f in futures]
    finally:
        producer.close(timeout=5)


def run_until_idle(pipeline: PipelineSettings, engine: FaceEngine) -> str:
    """One detector runner over the frames topic until it goes idle; its group."""
    group = pipeline.group("detector")
    handler = DetectorHandler(engine, encodings_topic=pipeline.topics.encodings)
    runner = Runner(handler, kafka=pipeline, topic=pipeline.topics.frames, group=group)
    worker = threading.Thread(target=runner.run, kwargs={"max_idle_seconds": 2.0})
    worker.start()
    worker.join(timeout=45)
    assert not worker.is_alive(), "the runner did not go idle"
    return group


@pytest.mark.timeout(60)
def test_runner_dead_letters_poison_and_goes_on(
    pipeline: PipelineSettings, detector_engine: FaceEngine, multi: Path
) -> None:
    good_a = frame((multi / "two_people.jpg").read_bytes(), "frame-a")
    poison = [
        (frame(b"not an image", "p-1"), "image_not_an_image"),
        (frame(_truncated(multi), "p-2"), "image_truncated"),
        (frame(gif(), "p-3"), "image_unsupported_format"),
        (fake(wall(), KEY, None), "invalid"),
        (frame(wall(), "p-5", v="9"), "unknown_version"),
        (fake(wall(), b"store-8/door-1", meta("p-6").to_headers()), "key_mismatch"),
    ]
    good_b = frame((multi / "obama-240p.jpg").read_bytes(), "frame-b")
    offsets = send_all(pipeline, [good_a, *(p for p, _ in poison), good_b])

    group = run_until_idle(pipeline, detector_engine)

    observations = [decode(FaceObservation, r.value) for r in read_observations(pipeline)]
    assert sorted(o.observation_id for o in observations) == ["frame-a:0", "frame-a:1", "frame-b:0"]
    # The camera's progress, after the commits: up to its latest frame, never back.
    promised = [p.before for p in read_progress(pipeline)]
    assert promised == sorted(set(promised)) and promised[-1] == T0 + timedelta(microseconds=1)

    letters = [
        decode(DeadLetter, r.value)
        for r in read_topic(pipeline, pipeline.topics.dlq(pipeline.topics.frames))
    ]
    # The key-mismatch frame went to another partition: compare as sets of (reason, offset).
    source_offsets = dict(zip((id(p) for p, _ in poison), offsets[1:-1], strict=True))
    assert sorted((d.reason, d.source_offset) for d in letters) == sorted(
        (reason, source_offsets[id(p)]) for p, reason in poison
    )
    assert all(d.stage == "detector" and d.source_topic == pipeline.topics.frames for d in letters)
    assert committed_lag(pipeline, group, pipeline.topics.frames) == 0


ENTRANCE = "entrance-2"
"""With door-1, a camera of store-7 whose frames murmur2 puts on another partition."""


@pytest.mark.timeout(60)
def test_cameras_of_one_store_spread_and_old_keys_still_work(
    pipeline: PipelineSettings, detector_engine: FaceEngine, multi: Path
) -> None:
    """Two cameras of one store on two partitions of frames.v1, a frame under the old store key
    (a camera not yet upgraded) on a third, a key naming another camera or store than the
    headers between good frames: every good frame is processed, each camera's in order, and
    every observation is keyed by the store; the odd keys are dead-lettered."""
    door, entrance = frame_key(STORE, CAMERA), frame_key(STORE, ENTRANCE)
    partitions = {k: partition_for(k, PARTITIONS) for k in (door, entrance, STORE)}
    assert len(set(partitions.values())) == 3, partitions
    photo = (multi / "obama-240p.jpg").read_bytes()  # one face

    def keyed(key: str, frame_id: str, camera: str, store: str = STORE) -> Record:
        return fake(photo, key.encode(), meta(frame_id, store, camera=camera).to_headers())

    records = [
        keyed(door, "door-a", CAMERA),
        keyed(entrance, "entrance-a", ENTRANCE),
        keyed(door, "door-b", CAMERA),
        keyed(STORE, "old-key", "till-1"),
        keyed(door, "wrong-camera", ENTRANCE),
        keyed(frame_key("store-8", CAMERA), "wrong-store", CAMERA),
        keyed(door, "door-c", CAMERA),
        keyed(entrance, "entrance-b", ENTRANCE),
    ]
    send_all(pipeline, records)
    frames = read_topic(pipeline, pipeline.topics.frames)
    on = {(r.key.decode(), r.partition) for r in frames if r.key.decode() in partitions}
    assert on == set(partitions.items())  # the producer's partitioner agrees with murmur2

    group = run_until_idle(pipeline, detector_engine)

    out = read_observations(pipeline)
    assert {r.key for r in out} == {STORE.encode()}  # one store, one partition for the matcher
    ids = [decode(FaceObservation, r.value).frame_id for r in out]
    assert sorted(ids) == sorted(
        ["door-a", "door-b", "door-c", "entrance-a", "entrance-b", "old-key"]
    )
    assert [i for i in ids if i.startswith("door")] == ["door-a", "door-b", "door-c"]
    assert [i for i in ids if i.startswith("entrance")] == ["entrance-a", "entrance-b"]

    letters = [
        decode(DeadLetter, r.value)
        for r in read_topic(pipeline, pipeline.topics.dlq(pipeline.topics.frames))
    ]
    assert sorted((d.reason, d.source_key) for d in letters) == [
        ("key_mismatch", door),
        ("key_mismatch", frame_key("store-8", CAMERA)),
    ]
    assert committed_lag(pipeline, group, pipeline.topics.frames) == 0


@pytest.mark.timeout(80)
def test_sigterm_mid_stream_then_restart_loses_nothing(
    pipeline: PipelineSettings, detector_engine: FaceEngine, lfw: Path, tmp_path: Path
) -> None:
    photos = [sorted(person.glob("*.jpg"))[0] for person in sorted(lfw.iterdir())[:3]]
    faces = [
        len([f for f in detector_engine.faces_in(p) if f.encoding is not None]) for p in photos
    ]
    total = 15
    records = []
    for i in range(total):
        at = T0 + timedelta(seconds=i)
        headers = FrameMeta(
            frame_id=f"f-{i:02d}", store_id=STORE, camera_id=CAMERA, captured_at=at
        ).to_headers()
        records.append(fake(photos[i % 3].read_bytes(), KEY, headers))
    expected = sum(faces[i % 3] for i in range(total))
    batch = 3
    env = pipeline_env(pipeline) | {"FACESTREAM_DETECTOR_MAX_BATCH": str(batch)}
    command = [sys.executable, "-m", "facestream.services.detector", "--log-level", "INFO"]

    def start(log_name: str, *extra: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / log_name).open("wb")
        return subprocess.Popen([*command, *extra], env=env, stderr=log, stdout=log)

    first = start("first.log", "--max-idle-seconds", "30")
    try:
        send_all(pipeline, records)
        consumer = KafkaConsumer(bootstrap_servers=pipeline.kafka_bootstrap)
        parts = [TopicPartition(pipeline.topics.encodings, p) for p in range(4)]
        deadline = time.monotonic() + 40
        while sum(consumer.end_offsets(parts).values()) == 0:
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.1)
        consumer.close()
        first.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert first.wait(timeout=20) == 0, (tmp_path / "first.log").read_text()
        assert time.monotonic() - signalled < 10
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    group = pipeline.group("detector")
    left = committed_lag(pipeline, group, pipeline.topics.frames)
    assert 0 < left < total, "SIGTERM should land mid-stream"

    second = start("second.log", "--max-idle-seconds", "2")
    try:
        assert second.wait(timeout=40) == 0, (tmp_path / "second.log").read_text()
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()

    ids = Counter(
        decode(FaceObservation, r.value).observation_id for r in read_observations(pipeline)
    )
    assert len(ids) == expected
    assert sum(ids.values()) - len(ids) <= batch
    assert {i.split(":")[0] for i in ids} == {f"f-{i:02d}" for i in range(total) if faces[i % 3]}
    assert committed_lag(pipeline, group, pipeline.topics.frames) == 0


@pytest.mark.timeout(180)
def test_a_stopping_detector_publishes_its_open_passes(
    pipeline: PipelineSettings,
    detector_engine: FaceEngine,
    video_records: list[Record],
    tmp_path: Path,
) -> None:
    """The real detector process, stopped (here: idle) in the middle of a video with no end
    record: before it stops it publishes its cameras' open passes, as an end record right
    after its last frame would have, instead of losing them."""
    frames = video_records[:25]  # the first 5 s of the clip; people in view at the cut
    reference = video_handler(detector_engine)
    expected = [o.value for r in frames for o in reference.handle(r)]
    owed = [o.value for o in reference.handle(video_records[-1])]
    assert owed, "someone is in view when the frames stop"
    send_all(pipeline, frames)
    log = tmp_path / "detector.log"
    run_detector_until_idle(pipeline, log)
    published = [r.value for r in read_observations(pipeline)]
    assert published == expected + owed, log.read_text()
    assert "ended early and published" in log.read_text()
