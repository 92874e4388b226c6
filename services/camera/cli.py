"""``facestream camera`` / ``python -m facestream.services.camera``: frames to ``frames.v1``.

One source per run: ``--source DIR`` (the folder's images in name order, stamped now),
``--manifest CSV`` (``path,captured_at[,camera]``, times with a UTC offset, replayable) or
``--video FILE_OR_URL`` (a file or an RTSP/HTTP stream, at most ``--fps`` frames a second).
Kafka and the topic prefix come from ``FACESTREAM_*``. Prints a one-line summary.

``--detect`` finds the faces in the frames here instead and publishes their observations to
``encodings.v1`` (:mod:`.edge`), tuned by ``FACESTREAM_DETECTOR_*`` as the detector is.

Not a consumer, so not a :class:`~facestream.runtime.entry.Worker`, but its start-up errors read
the same: invalid settings exit with code 2, an unreachable Kafka with one message.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from facestream.runtime.entry import load_settings, reaching
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.services.camera.publisher import (
    CameraError,
    Frame,
    Skipped,
    check_id,
    frames_from_dir,
    frames_from_manifest,
    publish,
)
from facestream.services.camera.video import frames_from_video

if TYPE_CHECKING:
    # Imports dlib: only --detect loads it, so that a camera publishing frames stays light.
    from facestream.core.detection import DetectorSettings


@click.command("camera")
@click.option(
    "--store",
    "store_id",
    required=True,
    help="Store id (the Kafka key; with --key-by camera, store/camera).",
)
@click.option(
    "--camera",
    "camera_id",
    default=None,
    help="Camera id (required with --source and --video; the manifest's default).",
)
@click.option(
    "--source",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Folder of JPEG/PNG/BMP images, published in name order, stamped at publish time.",
)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="CSV with header path,captured_at[,camera]; paths relative to the CSV's folder.",
)
@click.option("--video", default=None, help="Video file or stream URL (rtsp://, http://).")
@click.option(
    "--fps",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="At most this many frames per second of video (--video).",
)
@click.option(
    "--key-by",
    type=click.Choice(["store", "camera"]),
    default="camera",
    show_default=True,
    envvar="FACESTREAM_CAMERA_KEY_BY",
    help="Key frames by store/camera, spreading a store's cameras over the detectors (the "
    "matcher orders their faces by capture time), or by store (one detector per store: for "
    "detectors not yet upgraded, docs/deploy.md).",
)
@click.option(
    "--max-frames",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after publishing (with --detect, analysing) this many frames.",
)
@click.option(
    "--detect",
    is_flag=True,
    help="Find the faces here and publish observations to encodings.v1, keyed by store, "
    "instead of frames to frames.v1 (detection at the edge: no image leaves the store). "
    "Tuned by FACESTREAM_DETECTOR_*, as the detector is.",
)
def camera_command(
    store_id: str,
    camera_id: str | None,
    source: Path | None,
    manifest: Path | None,
    video: str | None,
    fps: float,
    key_by: str,
    max_frames: int | None,
    detect: bool,
) -> None:
    """Publish camera frames to frames.v1 (key = the store, or store/camera; FrameMeta in the
    headers), or with --detect the faces found in them to encodings.v1."""
    if detect and _given(click.get_current_context(), "key_by"):
        raise click.UsageError(
            "--key-by is for frames; with --detect observations are keyed by store"
        )
    chosen = [
        name
        for name, v in (("--source", source), ("--manifest", manifest), ("--video", video))
        if v
    ]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --source, --manifest or --video")
    settings = load_settings(PipelineSettings)
    detector = None
    if detect:
        from facestream.core.detection import DetectorSettings

        detector = load_settings(DetectorSettings)
    try:
        check_id(store_id, "store")
        if camera_id is not None:
            check_id(camera_id, "camera")
        elif manifest is None:
            raise CameraError(f"{chosen[0]} needs --camera")
        items: Iterable[Frame | Skipped]
        if source is not None:
            assert camera_id is not None
            items = frames_from_dir(source, camera_id)
        elif manifest is not None:
            items = frames_from_manifest(manifest, camera_id)
        else:
            assert video is not None and camera_id is not None
            items = frames_from_video(video, camera_id, fps=fps)
    except CameraError as exc:
        raise click.ClickException(str(exc)) from exc
    if detector is not None:
        _detect(settings, detector, store_id, items, max_frames)
        return
    with reaching(settings):
        producer = make_producer(settings)
    try:
        report = publish(
            producer,
            settings.topics.frames,
            store_id,
            items,
            max_frames=max_frames,
            key_by=key_by,  # type: ignore[arg-type]
        )
    except CameraError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        producer.close(timeout=10)
    click.echo(
        f"published {report.published} frames to {report.topic} (store {store_id}); "
        f"{report.skipped} skipped, {report.failed} failed"
        + (f"; the video's end sent for {report.ends} camera(s)" if report.ends else "")
    )
    for where in report.skipped_sources[:10]:
        click.echo(f"  skipped {where}", err=True)
    if report.failed:
        raise click.ClickException(f"{report.failed} frames were not acknowledged by Kafka")


def _given(context: click.Context, name: str) -> bool:
    """Whether the option was given on the command line (not its default or environment)."""
    return context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE


def _detect(
    settings: PipelineSettings,
    detector: DetectorSettings,
    store_id: str,
    items: Iterable[Frame | Skipped],
    max_frames: int | None,
) -> None:
    """``--detect``: the frames' observations to encodings.v1, and a summary with the bytes
    that went out against those the frames would have sent."""
    from facestream.core.engine import FaceEngine
    from facestream.core.passes import VideoPasses
    from facestream.services.camera.edge import detect_and_publish

    engine = FaceEngine(detector.engine_config())
    passes = VideoPasses.from_settings(engine, detector) if detector.video_passes else None
    with reaching(settings):
        producer = make_producer(settings)
    try:
        report = detect_and_publish(
            producer,
            settings.topics.encodings,
            store_id,
            items,
            engine,
            passes=passes,
            max_frames=max_frames,
        )
    except CameraError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        producer.close(timeout=10)
    per_frame = report.detect_seconds / report.frames * 1000 if report.frames else 0.0
    click.echo(
        f"published {report.published} observations to {report.topic} (store {store_id}) "
        f"from {report.frames} frames ({report.faces} faces found, {report.passes} person "
        f"passes); "
        f"{report.skipped} skipped, {report.failed} failed"
    )
    click.echo(
        f"  {report.observation_bytes} bytes of observations (and {report.progress_bytes} of "
        f"{report.progress} camera progress records) instead of {report.frame_bytes} bytes of "
        f"frames; {per_frame:.0f} ms a frame to detect"
    )
    for where in report.skipped_sources[:10]:
        click.echo(f"  skipped {where}", err=True)
    if report.failed:
        raise click.ClickException(f"{report.failed} observations were not acknowledged by Kafka")
