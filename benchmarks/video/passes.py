"""What the video benchmarks share: which truth pass a face belongs to, and re-identification
of the people who pass twice."""

from __future__ import annotations

from typing import Any

from facestream.core.engine import Encoding, face_distance
from facestream.core.tracking import iou
from facestream.schemas.messages import Box


def pass_at(passes: list[dict[str, Any]], frame: int, box: Box) -> int | None:
    """The truth pass whose face box at ``frame`` overlaps ``box`` most (at least a third of
    their union: where two faces cross, a box overlaps both)."""
    best, index = 1 / 3, None
    for i, p in enumerate(passes):
        for f, top, right, bottom, left, _ in p["boxes"]:
            if f == frame:
                overlap = iou(Box(top=top, right=right, bottom=bottom, left=left), box)
                if overlap > best:
                    best, index = overlap, i
    return index


def reidentification(
    passes: list[dict[str, Any]], encodings: dict[int, Encoding]
) -> tuple[list[float], int, int]:
    """For each person's second pass: its distance to their first pass, and whether their first
    pass is the nearest first pass of anyone. Returns (distances, right, asked)."""
    first: dict[str, int] = {}
    second: dict[str, int] = {}
    for i, p in enumerate(passes):
        (second if p["person"] in first else first).setdefault(p["person"], i)
    distances, right, asked = [], 0, 0
    for person, j in second.items():
        if j not in encodings or first[person] not in encodings:
            continue
        asked += 1
        ranked = sorted(
            (face_distance(encodings[j], encodings[i]), who)
            for who, i in first.items()
            if i in encodings
        )
        distances.append(face_distance(encodings[j], encodings[first[person]]))
        right += ranked[0][1] == person
    return distances, right, asked
