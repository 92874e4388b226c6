"""The camera publisher: manifests, folders and videos onto the real broker's frames topic."""

from __future__ import annotations

import itertools
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from facestream.core.images import load_image
from facestream.runtime.logs import redact_url
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import FrameMeta
from facestream.schemas.keys import frame_key, partition_for
from facestream.services.camera.cli import camera_command
from facestream.services.camera.publisher import (
    CameraError,
    Frame,
    frame_id,
    frames_from_dir,
    frames_from_manifest,
    publish,
    read_manifest,
)
from facestream.services.camera.video import frames_from_video
from tests.kafka_fixtures import PARTITIONS, pipeline_env, read_topic

STORE = "store-3"


def read_frames(settings: PipelineSettings, timeout: float = 20.0) -> list[Any]:
    """Every record now in the frames topic, partition by partition, in offset order."""
    return read_topic(settings, settings.topics.frames, timeout)


@pytest.fixture
def photos(lfw: Path, tmp_path: Path) -> list[Path]:
    """Four real photos copied under tmp_path/shots, as a camera's upload folder."""
    shots = tmp_path / "shots"
    shots.mkdir()
    people = sorted(lfw.iterdir())[:4]
    return [
        Path(shutil.copy(sorted(p.glob("*.jpg"))[0], shots / f"{i:02d}-{p.name}.jpg"))
        for i, p in enumerate(people)
    ]


def test_manifest_is_published_in_order_with_its_times(
    pipeline: PipelineSettings, photos: list[Path], tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,captured_at,camera\n"
        f"shots/{photos[2].name},2024-05-17T09:30:00+02:00,door-2\n"
        f"shots/{photos[0].name},2024-05-17T07:30:00.500Z,\n"
        "shots/gone.jpg,2024-05-17T07:31:00Z,door-2\n"
        f"shots/{photos[1].name},2024-05-17T03:32:00-04:00,door-2\n"
    )
    producer = make_producer(pipeline)
    try:
        items = frames_from_manifest(manifest, default_camera="door-1")
        report = publish(producer, pipeline.topics.frames, STORE, items, key_by="camera")
    finally:
        producer.close(timeout=5)
    assert (report.sent, report.failed, report.skipped) == (3, 0, 1)
    assert report.skipped_sources == ["line 4: shots/gone.jpg"]

    # Keyed store/camera: one camera, one partition, in order; the store's two cameras are on
    # two partitions (murmur2 says so for these ids), read here partition by partition.
    keys = {camera: frame_key(STORE, camera) for camera in ("door-1", "door-2")}
    on = {camera: partition_for(key, PARTITIONS) for camera, key in keys.items()}
    assert on["door-1"] != on["door-2"]
    records = sorted(
        read_frames(pipeline), key=lambda r: (r.key != keys["door-2"].encode(), r.offset)
    )
    assert len(records) == 3
    assert [(r.key.decode(), r.partition) for r in records] == [
        (keys[camera], on[camera]) for camera in ("door-2", "door-2", "door-1")
    ]
    assert [r.value for r in records] == [photos[i].read_bytes() for i in (2, 1, 0)]
    metas = [FrameMeta.from_headers(r.headers) for r in records]
    assert [m.camera_id for m in metas] == ["door-2", "door-2", "door-1"]
    assert [m.captured_at for m in metas] == [
        datetime(2024, 5, 17, 7, 30, tzinfo=UTC),
        datetime(2024, 5, 17, 7, 32, tzinfo=UTC),
        datetime(2024, 5, 17, 7, 30, 0, 500_000, tzinfo=UTC),
    ]
    assert metas[0].captured_at.utcoffset() == timedelta(hours=2)  # the offset travels as written
    assert {m.store_id for m in metas} == {STORE} and {m.content_type for m in metas} == {
        "image/jpeg"
    }
    # A replay of the manifest derives the same frame ids.
    replay = [f for f in frames_from_manifest(manifest, "door-1") if isinstance(f, Frame)]
    assert sorted(frame_id(STORE, f) for f in replay) == sorted(m.frame_id for m in metas)
    assert len({m.frame_id for m in metas}) == 3


BAD_MANIFESTS = [
    ("naive time", "path,captured_at\na.jpg,2024-05-17T09:30:00\n", "line 2: .*no UTC offset"),
    ("not a time", "path,captured_at\na.jpg,yesterday\n", "line 2: .*not an ISO-8601"),
    ("no camera", "path,captured_at\na.jpg,2024-05-17T09:30:00Z\n", "line 2: no camera"),
    ("bad camera", "path,captured_at,camera\na.jpg,2024-05-17T09:30:00Z,a/b\n", "not a valid id"),
    ("wrong header", "file,time\na.jpg,2024-05-17T09:30:00Z\n", "header must be"),
    ("empty", "path,captured_at\n", "no rows"),
]


@pytest.mark.parametrize(
    ("text", "error"), [b[1:] for b in BAD_MANIFESTS], ids=[b[0] for b in BAD_MANIFESTS]
)
def test_bad_manifests_are_refused_whole(tmp_path: Path, text: str, error: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(CameraError, match=error):
        read_manifest(manifest, default_camera=None)


def test_every_bad_row_is_listed(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,captured_at,camera\n"
        "a.jpg,2024-05-17T09:30:00+00:00,c1\n"
        "b.jpg,2024-05-17T09:31:00,c1\n"
        "c.jpg,2024-05-17T09:32:00,c1\n"
    )
    with pytest.raises(CameraError, match=r"2 bad rows[\s\S]*line 3[\s\S]*line 4"):
        read_manifest(manifest, default_camera=None)


def test_folder_is_read_in_name_order_and_stamped(photos: list[Path]) -> None:
    stamps = iter(datetime(2024, 1, 1, 12, 0, s, tzinfo=UTC) for s in range(10))
    frames = list(frames_from_dir(photos[0].parent, "door-1", clock=lambda: next(stamps)))
    assert [f.source for f in frames] == sorted(p.name for p in photos)
    assert [f.captured_at.second for f in frames] == [0, 1, 2, 3]
    empty = photos[0].parent.parent / "empty"
    empty.mkdir()
    with pytest.raises(CameraError, match="no JPEG"):
        frames_from_dir(empty, "door-1")


def make_video(photos: list[Path], path: Path, fps: float, seconds: float) -> Path:
    """An MJPEG video of the photos, each shown for an equal share of ``seconds``."""
    size = (320, 240)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    count = round(fps * seconds)
    for i in range(count):
        image = cv2.imread(str(photos[i * len(photos) // count]))
        assert image is not None
        canvas = np.full((size[1], size[0], 3), 90, dtype=np.uint8)
        canvas[:, 35:285] = cv2.resize(image, (250, 240))
        writer.write(canvas)
    writer.release()
    return path


@pytest.mark.timeout(60)
def test_video_is_published_at_the_fps_cap(
    pipeline: PipelineSettings, photos: list[Path], tmp_path: Path
) -> None:
    video = make_video(photos, tmp_path / "door.avi", fps=10, seconds=2.0)
    start = datetime(2024, 5, 17, 9, 0, tzinfo=UTC)
    frames = list(frames_from_video(str(video), "door-1", fps=2, clock=lambda: start))
    # 20 frames at 10 fps, capped at 2 a second: frames 0, 5, 10, 15, half a second apart.
    assert [f.source for f in frames] == [f"door.avi#{i}" for i in (0, 5, 10, 15)]
    assert [f.captured_at for f in frames] == [start + timedelta(seconds=s / 2) for s in range(4)]

    runner = CliRunner()
    env = pipeline_env(pipeline)
    args = ["--store", STORE, "--camera", "door-1", "--video", str(video)]
    result = runner.invoke(camera_command, args, env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"published 4 frames to {pipeline.topics.frames}")
    result = runner.invoke(camera_command, [*args, "--fps", "5", "--max-frames", "3"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("published 3 frames")

    # Each run's frames are marked as video and followed by the video's end: a record with no
    # image, at the last frame's time, that ends the camera's open passes at the detector.
    assert "the video's end sent for 1 camera(s)" in result.output
    records = read_frames(pipeline)
    assert len(records) == 9
    ends = [FrameMeta.from_headers(r.headers) for r in (records[4], records[8])]
    assert [r.value for r in (records[4], records[8])] == [b"", b""]
    assert {m.video for m in ends} == {"end"}
    assert [m.captured_at for m in ends] == [
        FrameMeta.from_headers(records[i].headers).captured_at for i in (3, 7)
    ]
    records = records[:4] + records[5:8]
    metas = [FrameMeta.from_headers(r.headers) for r in records]
    assert {m.video for m in metas} == {"frame"}
    assert all(m.content_type == "image/jpeg" and m.camera_id == "door-1" for m in metas)
    assert all(load_image(r.value).shape == (240, 320, 3) for r in records)
    first = [m.captured_at for m in metas[:4]]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(first)] == [0.5] * 3
    second = [m.captured_at for m in metas[4:]]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(second)] == [0.2] * 2


def test_cli_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(camera_command, ["--store", STORE, "--camera", "c1"])
    assert result.exit_code == 2 and "exactly one of" in result.output
    result = runner.invoke(camera_command, ["--store", STORE, "--video", "x.mp4"])
    assert result.exit_code == 1 and "--video needs --camera" in result.output
    result = runner.invoke(camera_command, ["--store", "s/1", "--camera", "c1", "--video", "x"])
    assert result.exit_code == 1 and "not a valid id" in result.output
    result = runner.invoke(camera_command, ["--store", STORE, "--camera", "c1", "--video", "x.mp4"])
    assert result.exit_code == 1 and "no video file" in result.output


def test_invalid_settings_exit_2_as_for_every_worker(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--store", STORE, "--camera", "c1", "--source", str(tmp_path)]
    (tmp_path / "a.jpg").write_bytes(b"never read: the settings are refused first")
    result = runner.invoke(camera_command, args, env={"FACESTREAM_METRICS_PORT": "70000"})
    assert result.exit_code == 2, result.output
    assert "invalid settings: FACESTREAM_METRICS_PORT: " in result.output


def test_stream_credentials_stay_out_of_logs() -> None:
    assert redact_url("rtsp://admin:secret@10.0.0.5:554/stream1") == "rtsp://10.0.0.5:554/stream1"
    assert redact_url("/videos/door.mp4") == "/videos/door.mp4"
