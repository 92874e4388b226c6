"""1:1 verification on real photos: the typed verdict and its JSON form (CLI and API)."""

from __future__ import annotations

from pathlib import Path

from facestream.core.engine import FaceEngine
from facestream.core.verification import DEFAULT_VERIFY_THRESHOLD, verify_images
from facestream.schemas import Box


def test_same_person_with_boxes(engine: FaceEngine, multi: Path) -> None:
    result = verify_images(
        multi / "obama.jpg", multi / "obama-240p.jpg", DEFAULT_VERIFY_THRESHOLD, engine
    )
    assert result.same and result.reason == "match" and result.faces is None
    assert result.distance is not None and result.distance <= DEFAULT_VERIFY_THRESHOLD
    assert isinstance(result.box_a, Box) and isinstance(result.box_b, Box)
    out = result.as_dict()
    assert list(out) == ["same", "distance", "threshold", "reason", "box_a", "box_b"]
    assert out["distance"] == round(result.distance, 4)
    assert out["box_a"] == {
        "top": result.box_a.top,
        "right": result.box_a.right,
        "bottom": result.box_a.bottom,
        "left": result.box_a.left,
    }


def test_different_people(engine: FaceEngine, multi: Path) -> None:
    result = verify_images(multi / "obama.jpg", multi / "biden.jpg", 0.62, engine)
    assert not result.same and result.reason == "over_threshold"
    assert result.distance is not None and result.distance > 0.62


def test_no_single_subject_names_the_photo(engine: FaceEngine, multi: Path) -> None:
    result = verify_images(multi / "obama.jpg", multi / "two_people.jpg", 0.62, engine)
    assert result.as_dict() == {
        "same": False,
        "distance": None,
        "threshold": 0.62,
        "reason": "no_single_subject_in_b",
        "faces": {"b": 2},
    }
