"""Frames from a video file or a stream (RTSP, HTTP), through OpenCV, at a capped frame rate."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from facestream.runtime.logs import redact_url
from facestream.services.camera.publisher import CameraError, Clock, Frame, utc_now

if TYPE_CHECKING:
    import cv2

log = logging.getLogger(__name__)


def frames_from_video(
    source: str,
    camera_id: str,
    *,
    fps: float = 2.0,
    clock: Clock = utc_now,
    jpeg_quality: int = 90,
) -> Iterator[Frame]:
    """Frames of a video file or stream (RTSP, HTTP: anything ``cv2.VideoCapture`` opens), at
    most ``fps`` per second of video, JPEG-encoded, until the video ends.

    A file's frames are stamped with the start time plus their position in the video (a file
    is read faster than real time); a stream's with the time each frame is read.
    """
    import cv2  # heavy, and only this source needs it

    if fps <= 0:
        raise CameraError("--fps must be positive")
    live = "://" in source
    if not live and not Path(source).is_file():
        raise CameraError(f"no video file at {source}")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise CameraError(f"cannot open the video {redact_url(source)}")
    return _video_frames(
        capture,
        redact_url(source) if live else Path(source).name,
        camera_id,
        live=live,
        fps=fps,
        clock=clock,
        jpeg_quality=jpeg_quality,
    )


def _video_frames(
    capture: cv2.VideoCapture,
    name: str,
    camera_id: str,
    *,
    live: bool,
    fps: float,
    clock: Clock,
    jpeg_quality: int,
) -> Iterator[Frame]:
    import cv2

    native_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    started = clock()
    period = 1.0 / fps
    next_at = 0.0
    index = -1
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            index += 1
            now = clock()
            if live:
                at = (now - started).total_seconds()
            elif native_fps > 0:
                at = index / native_fps
            else:
                at = float(capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
            if at + 1e-6 < next_at:
                continue  # over the fps cap; a stream must still be read to stay current
            # Keep a steady grid; after a stall, restart it rather than bursting to catch up.
            next_at = next_at + period if at < next_at + period else at + period
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            if not ok:
                log.warning(
                    "camera=%s: frame %d of %s could not be encoded", camera_id, index, name
                )
                continue
            captured_at = now if live else started + timedelta(seconds=at)
            yield Frame(encoded.tobytes(), camera_id, captured_at, f"{name}#{index}", video=True)
    finally:
        capture.release()
