"""1:1 verification: are the main faces of two photos the same person?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facestream.core.engine import FaceEngine, face_distance
from facestream.core.images import load_image
from facestream.core.photos import pick_subject

# The 1:1 default, calibrated on the LFW fold-1 pairs (`facestream eval verify`): accuracy is flat
# at 98.7% from 0.62 to 0.64 and 98.3% at dlib's customary 0.6. See docs/accuracy.md.
DEFAULT_VERIFY_THRESHOLD = 0.62


def verify_images(
    a: Path | bytes, b: Path | bytes, threshold: float, engine: FaceEngine | None = None
) -> dict[str, Any]:
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
            return {
                "same": False,
                "distance": None,
                "threshold": threshold,
                "reason": f"{reason}_in_{label}",
                "faces": {label: len(faces)},
            }
        subjects.append(subject)
    fa, fb = subjects
    assert fa.encoding is not None and fb.encoding is not None
    distance = face_distance(fa.encoding, fb.encoding)
    return {
        "same": distance <= threshold,
        "distance": round(distance, 4),
        "threshold": threshold,
        "reason": "match" if distance <= threshold else "over_threshold",
        "box_a": fa.box.as_dict(),
        "box_b": fb.box.as_dict(),
    }
