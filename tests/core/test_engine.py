"""The face engine on real photos: every face, boxes in original pixels, gate, determinism."""

from __future__ import annotations

import io
from pathlib import Path

import face_recognition
import numpy as np
import pytest
from PIL import Image

from facestream.core.engine import EngineConfig, FaceEngine, face_distance
from facestream.core.images import load_image
from facestream.schemas import Box


def _iou(a: object, b: object) -> float:
    ax = (a.left, a.top, a.right, a.bottom)  # type: ignore[attr-defined]
    bx = (b.left, b.top, b.right, b.bottom)  # type: ignore[attr-defined]
    iw = max(0, min(ax[2], bx[2]) - max(ax[0], bx[0]))
    ih = max(0, min(ax[3], bx[3]) - max(ax[1], bx[1]))
    inter = iw * ih
    area = (ax[2] - ax[0]) * (ax[3] - ax[1]) + (bx[2] - bx[0]) * (bx[3] - bx[1]) - inter
    return float(inter / area)


def test_single_portrait(engine: FaceEngine, multi: Path) -> None:
    faces = engine.faces_in(multi / "obama.jpg")
    assert len(faces) == 1
    face = faces[0]
    assert face.quality.passed and face.encoding is not None
    assert face.encoding.shape == (128,) and face.encoding.dtype == np.float32
    assert face.detector == "hog"


@pytest.mark.parametrize(("name", "count"), [("two_people.jpg", 2), ("kit_with_rose.jpg", 2)])
def test_every_face_of_a_group_photo(
    engine: FaceEngine, multi: Path, name: str, count: int
) -> None:
    faces = engine.faces_in(multi / name)
    assert len(faces) == count
    encs = [f.encoding for f in faces]
    assert all(e is not None for e in encs)
    # Different people: their encodings are far apart.
    assert face_distance(encs[0], encs[1]) > 0.6  # type: ignore[arg-type]


def test_same_person_across_photos(engine: FaceEngine, multi: Path) -> None:
    a = engine.faces_in(multi / "obama.jpg")[0].encoding
    b = engine.faces_in(multi / "obama-240p.jpg")[0].encoding
    c = engine.faces_in(multi / "biden.jpg")[0].encoding
    assert a is not None and b is not None and c is not None
    assert face_distance(a, b) < 0.5 < 0.7 < face_distance(a, c)


def test_encodings_match_face_recognition(multi: Path) -> None:
    """Without mirroring, our direct dlib calls give what face_recognition gives for the same
    box; with it (the default), the mean of that and the mirror image's encoding."""
    image = load_image(multi / "obama.jpg")
    face = FaceEngine(EngineConfig(mirror=False)).faces(image)[0]
    b = face.box
    theirs = face_recognition.face_encodings(image, [(b.top, b.right - 1, b.bottom - 1, b.left)])
    assert face.encoding is not None
    assert np.allclose(face.encoding, theirs[0], atol=1e-5)

    flipped = np.ascontiguousarray(image[:, ::-1])
    w = image.shape[1]
    mirror_box = (b.top, w - b.left - 1, b.bottom - 1, w - b.right)
    mirrored = face_recognition.face_encodings(flipped, [mirror_box])[0]
    averaged = FaceEngine().faces(image)[0]
    assert averaged.encoding is not None
    expected = (theirs[0] + mirrored) / 2
    # The mirror pass finds its landmarks on a crop around the face, not the whole flipped
    # frame: the same face to within a few hundredths (different people are 0.6+ apart).
    assert np.linalg.norm(averaged.encoding - expected) < 0.05
    assert np.linalg.norm(averaged.encoding - theirs[0]) > 0.01


def test_deterministic(engine: FaceEngine, lfw: Path) -> None:
    path = lfw / "Hugo_Chavez" / "Hugo_Chavez_0003.jpg"
    first, second = engine.faces_in(path), engine.faces_in(path)
    assert [f.box for f in first] == [f.box for f in second]
    assert all(
        np.array_equal(a.encoding, b.encoding)  # type: ignore[arg-type]
        for a, b in zip(first, second, strict=True)
    )


def test_large_frame_downscaled_for_detection_boxes_in_original_pixels(multi: Path) -> None:
    image = load_image(multi / "obama-1080p.jpg")
    full = FaceEngine(EngineConfig(max_detect_side=4000)).faces(image)
    small = FaceEngine(EngineConfig(max_detect_side=640)).faces(image)
    assert len(full) == len(small) == 1
    # HOG's box shifts a little with scale; a wrong mapping back would not overlap at all.
    assert _iou(full[0].box, small[0].box) > 0.7
    # Encoded from the full-resolution image either way: the same face, nearly the same vector.
    assert face_distance(full[0].encoding, small[0].encoding) < 0.1  # type: ignore[arg-type]


def test_quality_gate_too_small(multi: Path) -> None:
    faces = FaceEngine(EngineConfig(min_face_px=100)).faces_in(multi / "obama-240p.jpg")
    assert len(faces) == 1
    assert faces[0].encoding is None
    assert faces[0].quality.reasons == ("too_small",)


def test_quality_gate_blurry(engine: FaceEngine, multi: Path) -> None:
    image = Image.open(multi / "obama.jpg").convert("RGB")
    # Heavy blur, but the face is still detectable: the gate, not the detector, must reject it.
    blurred = np.asarray(image.resize((40, 40)).resize(image.size, Image.Resampling.BICUBIC))
    faces = FaceEngine(EngineConfig(min_sharpness=40)).faces(np.ascontiguousarray(blurred))
    assert faces and faces[0].encoding is None and "blurry" in faces[0].quality.reasons
    sharp = FaceEngine(EngineConfig(min_sharpness=40)).faces_in(multi / "obama.jpg")
    assert sharp[0].quality.passed


def test_no_face(engine: FaceEngine) -> None:
    wall = np.full((300, 400, 3), 128, dtype=np.uint8)
    assert engine.faces(wall) == []


# LFW fold-1 images on which HOG alone (upsampled once) finds no face.
HOG_MISSES = ("Brawley_King/Brawley_King_0001.jpg", "George_Galloway/George_Galloway_0004.jpg")


@pytest.mark.parametrize("name", HOG_MISSES)
def test_fallback_finds_what_the_first_pass_misses(
    engine: FaceEngine, lfw: Path, name: str
) -> None:
    assert FaceEngine(EngineConfig(fallbacks=())).faces_in(lfw / name) == []
    faces = engine.faces_in(lfw / name)
    assert len(faces) >= 1
    assert faces[0].detector in ("hog-upsample", "hog-pad", "cnn")
    assert faces[0].encoding is not None


def test_rgba_and_rotated_inputs_still_give_faces(engine: FaceEngine, multi: Path) -> None:
    assert len(engine.faces_in(multi / "32bit.png")) == 1
    image = Image.open(multi / "obama.jpg")
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated; displayed upright once the tag is applied
    buf = io.BytesIO()
    image.rotate(-90, expand=True).save(buf, format="JPEG", exif=exif.tobytes())
    assert len(engine.faces_in(buf.getvalue())) == 1


def test_boxes_are_the_wire_box(engine: FaceEngine, multi: Path) -> None:
    """The engine's box is the message contract's: it goes into a message as is."""
    face = engine.faces_in(multi / "obama.jpg")[0]
    assert isinstance(face.box, Box)
    assert (face.box.width, face.box.height) == (
        face.box.right - face.box.left,
        face.box.bottom - face.box.top,
    )
    assert list(face.as_dict()["box"]) == ["top", "right", "bottom", "left"]
    assert Box.model_validate_json(face.box.model_dump_json()) == face.box
