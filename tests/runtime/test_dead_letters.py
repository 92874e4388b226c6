"""Dead letters on the real broker: a poison frame's dead letter says why, where and what
(size, hash), but carries the face image only when FACESTREAM_DLQ_KEEP_PAYLOAD asks for it."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from PIL import Image

from facestream.core.engine import FaceEngine
from facestream.devstack.workers import spawn_worker, stop_workers
from facestream.runtime.runner import Runner, make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import DeadLetter, FrameMeta, decode
from facestream.services.detector.worker import DetectorHandler
from tests.kafka_fixtures import read_topic

STORE = "store-dl"


def image() -> bytes:
    """A real JPEG (noise: what matters is that its bytes must not reach the dead letter)."""
    pixels = np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def dead_letter_of_a_poison_frame(
    pipeline: PipelineSettings, engine: FaceEngine, value: bytes, keep: bool
) -> DeadLetter:
    """Publish one frame of an unknown version, run the detector's runner until idle, and
    return the one dead letter it wrote."""
    meta = FrameMeta(
        frame_id="poison-1", store_id=STORE, camera_id="door", captured_at=datetime.now(UTC)
    )
    headers = [(k, b"9" if k == "v" else v) for k, v in meta.to_headers()]
    producer = make_producer(pipeline)
    try:
        producer.send(pipeline.topics.frames, value, key=STORE.encode(), headers=headers).get(20)
    finally:
        producer.close(timeout=5)
    handler = DetectorHandler(engine, encodings_topic=pipeline.topics.encodings)
    runner = Runner(
        handler,
        kafka=pipeline,
        topic=pipeline.topics.frames,
        group=pipeline.group("detector"),
        keep_dead_letter_payload=keep,
    )
    worker = threading.Thread(target=runner.run, kwargs={"max_idle_seconds": 2.0})
    worker.start()
    worker.join(timeout=40)
    assert not worker.is_alive(), "the runner did not go idle"
    (record,) = read_topic(pipeline, pipeline.topics.dlq(pipeline.topics.frames))
    assert record.key == STORE.encode()
    return decode(DeadLetter, record.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("keep", [False, True], ids=["default", "keep-payload"])
def test_a_poison_frames_dead_letter_keeps_the_image_only_when_asked(
    pipeline: PipelineSettings, engine: FaceEngine, keep: bool
) -> None:
    value = image()
    letter = dead_letter_of_a_poison_frame(pipeline, engine, value, keep)
    assert letter.reason == "unknown_version" and letter.stage == "detector"
    assert letter.source_topic == pipeline.topics.frames and letter.source_offset == 0
    assert letter.source_headers["frame_id"] == "poison-1"  # metadata: always kept
    digest = hashlib.sha256(value).hexdigest()
    if keep:
        assert base64.b64decode(letter.payload_b64) == value
        assert not letter.payload_truncated
        assert "withheld" not in letter.error
    else:
        assert letter.payload_b64 == ""
        assert letter.payload_truncated  # the value is not all there: none of it is
        assert f"[value withheld: {len(value)} bytes, sha256 {digest}]" in letter.error


def test_the_setting_is_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACESTREAM_DLQ_KEEP_PAYLOAD", raising=False)
    assert PipelineSettings().dlq_keep_payload is False
    monkeypatch.setenv("FACESTREAM_DLQ_KEEP_PAYLOAD", "true")
    assert PipelineSettings().dlq_keep_payload is True


@pytest.mark.timeout(120)
def test_a_worker_reads_its_dead_letter_and_clock_settings_from_the_environment(
    pipeline: PipelineSettings,
) -> None:
    """A real detector process: FACESTREAM_MAX_AHEAD_SECONDS=60 refuses a frame stamped 5
    minutes ahead (the default 10 minutes would take it), and FACESTREAM_DLQ_KEEP_PAYLOAD=true
    keeps its image in the dead letter."""
    value = image()
    ahead = datetime.now(UTC) + timedelta(minutes=5)
    meta = FrameMeta(frame_id="ahead-1", store_id=STORE, camera_id="door", captured_at=ahead)
    producer = make_producer(pipeline)
    try:
        producer.send(
            pipeline.topics.frames, value, key=STORE.encode(), headers=meta.to_headers()
        ).get(20)
    finally:
        producer.close(timeout=5)
    env = {"FACESTREAM_MAX_AHEAD_SECONDS": "60", "FACESTREAM_DLQ_KEEP_PAYLOAD": "true"}
    proc = spawn_worker("detector", pipeline, extra_env=env)
    try:
        dlq = pipeline.topics.dlq(pipeline.topics.frames)
        deadline = time.monotonic() + 90
        records: list[Any] = []
        while not records:
            assert proc.poll() is None, "the detector stopped"
            assert time.monotonic() < deadline, "no dead letter"
            records = read_topic(pipeline, dlq, timeout=2.0)
    finally:
        stop_workers([("detector", proc)])
    letter = decode(DeadLetter, records[0].value)
    assert letter.reason == "invalid" and "ahead" in letter.error.lower()
    assert base64.b64decode(letter.payload_b64) == value
