"""1:1 verification: are the main faces of two photos the same person?"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facestream.core.engine import FaceEngine, face_distance
from facestream.core.images import load_image
from facestream.core.photos import pick_subject
from facestream.schemas.messages import Box

# The 1:1 default, fitted on every pair of photos of the *fit* half of LFW fold 1's people (same
# and different pairs weighted half and half, as the official pairs are; 0.6118) and reported on
# the other half's official pairs: 98.88%, which is also the best any one threshold reaches on
# them. `python -m benchmarks.accuracy.verify_norm` prints both; see docs/accuracy.md.
DEFAULT_VERIFY_THRESHOLD = 0.61


@dataclass(frozen=True)
class Verification:
    """The 1:1 verdict on two photos.

    Either both photos had a subject (``distance``, ``box_a`` and ``box_b`` are set) or one had
    none (``distance`` is None and ``faces`` counts the faces of the photo that failed)."""

    same: bool
    distance: float | None
    """Euclidean distance between the two subjects, unrounded."""
    threshold: float
    reason: str
    """``match``, ``over_threshold``, or ``{no_face,no_single_subject}_in_{a,b}``."""
    box_a: Box | None = None
    box_b: Box | None = None
    faces: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of ``facestream verify --json`` and ``/verify``: the distance rounded
        to 4 places; the boxes, or the face count, whichever applies."""
        out: dict[str, Any] = {
            "same": self.same,
            "distance": None if self.distance is None else round(self.distance, 4),
            "threshold": self.threshold,
            "reason": self.reason,
        }
        if self.faces is not None:
            out["faces"] = dict(self.faces)
        if self.box_a is not None and self.box_b is not None:
            out["box_a"] = self.box_a.model_dump()
            out["box_b"] = self.box_b.model_dump()
        return out


def verify_images(
    a: Path | bytes, b: Path | bytes, threshold: float, engine: FaceEngine | None = None
) -> Verification:
    """Compare the subject of each photo (its dominant face). Raises ``ImageError`` for a bad
    image; a photo without a single clear subject gives ``distance`` None and the reason."""
    engine = engine or FaceEngine()
    subjects = []
    for label, source in (("a", a), ("b", b)):
        image = load_image(source, max_pixels=engine.config.max_pixels)
        faces = engine.faces(image)
        subject = pick_subject(faces, (image.shape[0], image.shape[1]), "dominant")
        if subject is None or subject.encoding is None:
            reason = "no_face" if not faces else "no_single_subject"
            return Verification(
                same=False,
                distance=None,
                threshold=threshold,
                reason=f"{reason}_in_{label}",
                faces={label: len(faces)},
            )
        subjects.append(subject)
    fa, fb = subjects
    assert fa.encoding is not None and fb.encoding is not None
    distance = face_distance(fa.encoding, fb.encoding)
    return Verification(
        same=distance <= threshold,
        distance=distance,
        threshold=threshold,
        reason="match" if distance <= threshold else "over_threshold",
        box_a=fa.box,
        box_b=fb.box,
    )
