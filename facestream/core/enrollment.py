"""Enroll people from a folder of photos into a gallery, with a report of every photo.

Two layouts, both accepted in one folder:

* a folder per person, ``DIR/Alan_Turing/*.jpg`` (the LFW layout): the folder name is the id,
  and with underscores as spaces, the display name;
* flat files whose name prefix before the first ``_`` is the id, ``DIR/0001_2.jpg`` (the layout
  of the original face service); a file without ``_`` is a person of its own.

A photo is enrolled only when it has exactly one clear subject (a small bystander in the
background is tolerated, see :func:`facestream.core.photos.pick_subject`); every other photo is
skipped with its reason in the report, never silently dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from facestream.core.engine import Encoding, EngineConfig
from facestream.core.gallery import Gallery, Identity
from facestream.core.photos import Encoded, encode_many, image_files, pick_subject

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Photo:
    """A photo to enroll and the identity it belongs to."""

    path: Path
    identity_id: str
    name: str


def scan(folder: Path) -> list[Photo]:
    """Every photo under ``folder`` with the identity it belongs to, in a stable order."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    photos: list[Photo] = []
    for person in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos += [
            Photo(f, person.name, person.name.replace("_", " ")) for f in image_files(person)
        ]
    for f in image_files(folder):
        ident = f.stem.split("_", 1)[0] if "_" in f.stem else f.stem
        photos.append(Photo(f, ident, ident))
    return photos


PhotoStatus = Literal["enrolled", "no_face", "several_faces", "low_quality", "bad_image"]


@dataclass(frozen=True)
class Verdict:
    """What one photo contributes to an enrollment: its status, a detail (the detector that
    found the subject, or why the photo was skipped) and the subject's encoding when enrolled."""

    status: PhotoStatus
    detail: str
    encoding: Encoding | None = None


@dataclass(frozen=True)
class PhotoResult:
    """One photo's line in an :class:`EnrollReport`."""

    path: Path
    identity_id: str
    status: PhotoStatus
    detail: str = ""


@dataclass
class EnrollReport:
    """A verdict for every photo of an enrollment, in input order."""

    results: list[PhotoResult] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        """Photos per status."""
        return Counter(r.status for r in self.results)

    @property
    def identities(self) -> int:
        """Identities with at least one enrolled photo."""
        return len({r.identity_id for r in self.results if r.status == "enrolled"})

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: totals, counts per status and every skipped photo."""
        return {
            "photos": len(self.results),
            "identities": self.identities,
            "counts": dict(sorted(self.counts.items())),
            "skipped": [
                {"path": str(r.path), "id": r.identity_id, "status": r.status, "detail": r.detail}
                for r in self.results
                if r.status != "enrolled"
            ],
        }


def report_lines(summary: dict[str, Any]) -> list[str]:
    """Human-readable lines of a report's :meth:`EnrollReport.as_dict` (counts, then every
    skipped photo with its reason)."""
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    lines = [f"{summary['photos']} photos: {counts}"]
    lines += [f"  skipped {s['path']}: {s['status']} ({s['detail']})" for s in summary["skipped"]]
    return lines


def judge(encoded: Encoded) -> Verdict:
    """Decide what one encoded photo contributes: enrolled with its subject's encoding, or
    skipped with the reason."""
    if encoded.error is not None:
        return Verdict("bad_image", encoded.error)
    if not encoded.faces:
        return Verdict("no_face", "no face found")
    subject = pick_subject(encoded.faces, encoded.shape, "dominant")
    if subject is not None and subject.encoding is not None:
        return Verdict("enrolled", subject.detector, subject.encoding)
    usable = [f for f in encoded.faces if f.encoding is not None]
    if len(usable) > 1:
        return Verdict("several_faces", f"{len(usable)} faces of similar size")
    reasons = sorted({r for f in encoded.faces for r in f.quality.reasons})
    return Verdict("low_quality", ",".join(reasons))


def enroll_photos(
    photos: list[Photo],
    gallery: Gallery,
    *,
    kind: str = "member",
    engine: EngineConfig | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> EnrollReport:
    """Encode ``photos`` and add each usable one to ``gallery`` under its identity."""
    report = EnrollReport()
    by_path = {p.path: p for p in photos}
    pending: dict[str, list[Encoding]] = {}
    label = "enrolling" if progress else None
    for enc in encode_many(by_path, engine, workers=workers, progress=label):
        photo = by_path[enc.path]
        verdict = judge(enc)
        report.results.append(
            PhotoResult(enc.path, photo.identity_id, verdict.status, verdict.detail)
        )
        if verdict.encoding is not None:
            pending.setdefault(photo.identity_id, []).append(verdict.encoding)
        else:
            log.info("skipped %s: %s (%s)", enc.path, verdict.status, verdict.detail)
    names = {p.identity_id: p.name for p in photos}
    for ident, vectors in pending.items():
        gallery.add(Identity(ident, names[ident], kind), np.stack(vectors))
    return report


def enroll_folder(folder: Path, gallery: Gallery, **kwargs: Any) -> EnrollReport:
    """Enroll every photo under ``folder`` (either layout) into ``gallery``."""
    return enroll_photos(scan(folder), gallery, **kwargs)
