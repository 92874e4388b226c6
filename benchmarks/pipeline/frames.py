"""Camera frames for the pipeline benchmarks, and records shaped like Kafka's.

Frames are ``obama-1080p.jpg`` (one face) resized and JPEG-encoded as a camera would send them;
the empty frames are the same scene with the head blurred out, so that the detector scans the
same pixels and texture and only finds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from PIL import Image, ImageFilter

from benchmarks.common import jpeg
from facestream.core.datasets import datasets_root as datasets
from facestream.core.engine import FaceEngine
from facestream.core.images import load_image
from facestream.runtime.runner import Record
from facestream.schemas import FrameMeta
from facestream.schemas.keys import frame_key
from facestream.services.camera.publisher import Frame, frame_id

SCENE = "multi-face/obama-1080p.jpg"
CAMERA = "cam-1"


@dataclass(frozen=True)
class Frames:
    """JPEG bytes by frame height: the scene with its one face, and with the face blurred out."""

    one_face: dict[int, bytes]
    empty: dict[int, bytes]


def build_frames(engine: FaceEngine, heights: tuple[int, ...]) -> Frames:
    """Frames at ``heights`` (16:9); checks that each holds exactly the faces it should."""
    scene = Image.fromarray(load_image(datasets() / SCENE))
    faces = engine.faces(load_image(jpeg(scene, 720)))
    if len(faces) != 1:
        raise RuntimeError(f"{SCENE}: expected one face at 720p, found {len(faces)}")
    # Blur a generous box around the head (in 1080p pixels) until nothing face-like is left.
    box, scale = faces[0].box, scene.height / 720
    pad_x, pad_y = box.width * scale * 0.6, box.height * scale * 0.8
    region = (
        max(0, round(box.left * scale - pad_x)),
        max(0, round(box.top * scale - pad_y)),
        min(scene.width, round(box.right * scale + pad_x)),
        min(scene.height, round(box.bottom * scale + pad_y)),
    )
    blurred = scene.copy()
    blurred.paste(scene.crop(region).filter(ImageFilter.GaussianBlur(40)), region[:2])
    frames = Frames(
        one_face={h: jpeg(scene, h) for h in heights}, empty={h: jpeg(blurred, h) for h in heights}
    )
    for h in heights:
        found = len(engine.faces(load_image(frames.one_face[h])))
        empty = len(engine.faces(load_image(frames.empty[h])))
        if (found, empty) != (1, 0):
            raise RuntimeError(f"{h}p: {found} faces in the face frame, {empty} in the empty one")
    return frames


def camera_frame(data: bytes, captured_at: datetime, source: str, camera: str = CAMERA) -> Frame:
    """A frame as :func:`facestream.services.camera.publisher.publish` takes it."""
    return Frame(data, camera, captured_at, source)


def frame_record(
    topic: str, store: str, data: bytes, captured_at: datetime, source: str, offset: int = 0
) -> Record:
    """A ``frames.v1`` record as the camera publisher writes it (key = ``store/camera``)."""
    frame = camera_frame(data, captured_at, source)
    meta = FrameMeta(
        frame_id=frame_id(store, frame),
        store_id=store,
        camera_id=frame.camera_id,
        captured_at=captured_at,
        content_type=frame.content_type,
    )
    key = frame_key(store, frame.camera_id).encode()
    return Record(topic, 0, offset, key, data, meta.to_headers())
