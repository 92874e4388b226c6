"""What one photo contributes to an enrollment, on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facestream.core.engine import FaceEngine
from facestream.core.enrollment import judge
from facestream.core.images import load_image
from facestream.core.photos import Encoded


def _encoded(engine: FaceEngine, path: Path) -> Encoded:
    image = load_image(path)
    return Encoded(path, tuple(engine.faces(image)), (image.shape[0], image.shape[1]))


def test_a_portrait_is_enrolled_with_its_encoding(engine: FaceEngine, multi: Path) -> None:
    verdict = judge(_encoded(engine, multi / "obama.jpg"))
    assert (verdict.status, verdict.detail) == ("enrolled", "hog")
    assert verdict.encoding is not None and verdict.encoding.shape == (128,)


def test_two_people_side_by_side_are_skipped(engine: FaceEngine, multi: Path) -> None:
    verdict = judge(_encoded(engine, multi / "two_people.jpg"))
    assert (verdict.status, verdict.detail, verdict.encoding) == (
        "several_faces",
        "2 faces of similar size",
        None,
    )


def test_no_face_and_bad_image(engine: FaceEngine) -> None:
    wall = np.full((300, 400, 3), 128, dtype=np.uint8)
    no_face = judge(Encoded(Path("wall.png"), tuple(engine.faces(wall)), (300, 400)))
    assert (no_face.status, no_face.encoding) == ("no_face", None)
    bad = judge(Encoded(Path("x.jpg"), error="truncated: cut short"))
    assert (bad.status, bad.detail, bad.encoding) == ("bad_image", "truncated: cut short", None)
