"""The face engine: find every face in an image, gate it on quality, and encode it (128-d dlib).

Detection runs on a copy of the frame downscaled to ``max_detect_side`` (HOG's cost grows with
the pixel count) and the boxes are mapped back; landmarks and encodings are computed on the
full-resolution image, where the face has the most detail. When the first pass finds nothing,
the configured fallbacks run in order and the first that finds a face wins; which one found
each face is reported, and their costs are measured by ``benchmarks/engine/``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import dlib
import face_recognition_models
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from facestream.core.images import DEFAULT_MAX_PIXELS, RGBImage, load_image
from facestream.schemas.messages import Box

log = logging.getLogger(__name__)

Encoding = NDArray[np.float32]
Fallback = Literal["upsample", "pad", "cnn"]
ALL_FALLBACKS: Final[tuple[Fallback, ...]] = ("upsample", "pad", "cnn")
BASE_MODEL: Final = "dlib_face_recognition_resnet_model_v1"
MODEL_VERSION: Final = f"{BASE_MODEL}+mirror"
"""What produced an encoding: dlib's ResNet, averaged with the face's mirror image (the
default). Encodings of another version are not comparable and must not share a gallery."""


@dataclass(frozen=True)
class Quality:
    """The quality gate's verdict on one face; ``reasons`` is empty when it passed."""

    size_px: int
    sharpness: float
    score: float
    reasons: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """Whether the face passed the gate (and was encoded)."""
        return not self.reasons


@dataclass(frozen=True)
class Face:
    """One detected face. ``encoding`` is None when the face failed the quality gate."""

    box: Box
    detector: str
    quality: Quality
    encoding: Encoding | None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: box, detector and quality (the encoding is left out)."""
        return {
            "box": self.box.model_dump(),
            "detector": self.detector,
            "quality": {
                "passed": self.quality.passed,
                "reasons": list(self.quality.reasons),
                "size_px": self.quality.size_px,
                "sharpness": round(self.quality.sharpness, 1),
                "score": round(self.quality.score, 3),
            },
        }


@dataclass(frozen=True)
class EngineConfig:
    """Tuning of detection, fallbacks and the quality gate.

    Defaults were chosen on ../shared/datasets (see docs/accuracy.md): they find a face in every
    LFW fold-1 image but a few, and reject nothing there that the matcher would get right.
    """

    max_detect_side: int = 1280
    """Frames larger than this (longest side, pixels) are downscaled before detection."""
    upsample_below: int = 800
    """HOG runs with one upsampling step on detection images no larger than this, finding
    faces down to about 40 px; on larger images it runs without (faces from about 80 px)."""
    fallbacks: tuple[Fallback, ...] = ALL_FALLBACKS
    """What to try, in order, when the first pass finds no face."""
    fallback_max_side: int = 400
    """Fallbacks only run on images up to this size (after downscaling): they are for
    portraits and face crops. On an empty 480p camera frame they would cost 7-17 s (the CNN
    detector alone is ~80x the first pass); on a 250 px crop about 1.7 s at worst."""
    min_face_px: int = 40
    """Smaller faces (box width or height, original pixels) fail the gate: too few pixels to
    encode reliably."""
    min_sharpness: float = 4.0
    """Variance of the Laplacian of the face resized to 100x100 grey; below it is heavy blur.
    The softest LFW face scores 5, a typical one 120."""
    num_jitters: int = 1
    mirror: bool = True
    """Average each face's encoding with the encoding of its mirror image (the image flipped
    left-right, landmarks found again on it). It raised 1:N identification at the same
    false-accept rate on people the defaults were not fitted on (docs/accuracy.md), for a
    second pass of the network: encoding costs about twice as much."""
    landmarks: Literal["small", "large"] = "small"
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def model_version(self) -> str:
        """The version of the encodings made with this configuration: the mirror average is
        a model of its own (see :data:`MODEL_VERSION`)."""
        return MODEL_VERSION if self.mirror else BASE_MODEL


def _laplacian_variance(gray: NDArray[np.float32]) -> float:
    lap = (
        -4.0 * gray[1:-1, 1:-1]
        + gray[:-2, 1:-1]
        + gray[2:, 1:-1]
        + gray[1:-1, :-2]
        + gray[1:-1, 2:]
    )
    return float(lap.var())


def sharpness(image: RGBImage, box: Box) -> float:
    """Variance of the Laplacian of the face crop at a fixed 100x100, so scale does not matter."""
    h, w = image.shape[:2]
    top, bottom = max(0, box.top), min(h, box.bottom)
    left, right = max(0, box.left), min(w, box.right)
    if bottom - top < 3 or right - left < 3:
        return 0.0
    crop = Image.fromarray(image[top:bottom, left:right]).convert("L").resize((100, 100))
    return _laplacian_variance(np.asarray(crop, dtype=np.float32))


@dataclass
class _Models:
    hog: Any
    cnn: Any
    pose5: Any
    pose68: Any
    encoder: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


_MODELS: _Models | None = None
_MODELS_LOCK = threading.Lock()


def _models() -> _Models:
    """Load the dlib models once per process, on first use (never at import time)."""
    global _MODELS
    with _MODELS_LOCK:
        if _MODELS is None:
            started = time.perf_counter()
            _MODELS = _Models(
                hog=dlib.get_frontal_face_detector(),
                cnn=dlib.cnn_face_detection_model_v1(
                    face_recognition_models.cnn_face_detector_model_location()
                ),
                pose5=dlib.shape_predictor(
                    face_recognition_models.pose_predictor_five_point_model_location()
                ),
                pose68=dlib.shape_predictor(
                    face_recognition_models.pose_predictor_model_location()
                ),
                encoder=dlib.face_recognition_model_v1(
                    face_recognition_models.face_recognition_model_location()
                ),
            )
            log.debug("dlib models loaded in %.2fs", time.perf_counter() - started)
        return _MODELS


@dataclass(frozen=True)
class Detection:
    """A face the detectors found, before the quality gate."""

    rect: Any  # dlib.rectangle in original-image pixels
    score: float
    detector: str
    """Which pass found it: ``hog``, or a fallback (``hog-upsample``, ``hog-pad``, ``cnn``)."""


@dataclass(frozen=True)
class Candidate:
    """A detected face with its quality verdict, not encoded yet (see
    :meth:`FaceEngine.candidates`)."""

    box: Box
    detector: str
    quality: Quality
    rect: Any
    """The detector's rectangle, which :meth:`FaceEngine.encode` aligns the face from."""


class FaceEngine:
    """Detect, gate and encode faces. Thread-safe; one instance per process is enough."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self._m = _models()

    # -- detection ---------------------------------------------------------------------------

    def _hog(self, image: RGBImage, upsample: int) -> list[tuple[Any, float]]:
        rects, scores, _ = self._m.hog.run(image, upsample, 0.0)
        return list(zip(rects, scores, strict=True))

    def _cnn(self, image: RGBImage) -> list[tuple[Any, float]]:
        # The CNN detector is not documented as thread-safe; it is a rare fallback, so a lock
        # costs nothing in practice.
        with self._m.lock:
            found = self._m.cnn(image, 1)
        return [(d.rect, float(d.confidence)) for d in found]

    def detect(self, image: RGBImage) -> list[Detection]:
        """Every face box in ``image``, in original pixels, best-first by detector score."""
        cfg = self.config
        h, w = image.shape[:2]
        scale = min(1.0, cfg.max_detect_side / max(h, w))
        small = image
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        upsample = 1 if max(small.shape[:2]) <= cfg.upsample_below else 0
        found = [(r, s, "hog") for r, s in self._hog(small, upsample)]
        if not found and max(small.shape[:2]) <= cfg.fallback_max_side:
            found = self._fallbacks(small, upsample)
        dets = [
            Detection(_scale_rect(rect, 1.0 / scale, 0, 0), float(score), name)
            for rect, score, name in found
        ]
        return sorted(dets, key=lambda d: -d.score)

    def _fallbacks(self, small: RGBImage, upsample: int) -> list[tuple[Any, float, str]]:
        for name in self.config.fallbacks:
            if name == "upsample":
                hits = self._hog(small, upsample + 1)
                if hits:
                    return [(r, s, "hog-upsample") for r, s in hits]
            elif name == "pad":
                # HOG needs some context around a face; tight pre-cropped faces lack it. Pad
                # with the edge pixels by a quarter on each side and look again.
                h, w = small.shape[:2]
                ph, pw = h // 4, w // 4
                padded = np.pad(small, ((ph, ph), (pw, pw), (0, 0)), mode="edge")
                hits = self._hog(np.ascontiguousarray(padded), upsample + 1)
                if hits:
                    return [(_scale_rect(r, 1.0, -pw, -ph), s, "hog-pad") for r, s in hits]
            elif name == "cnn":
                hits = self._cnn(small)
                if hits:
                    return [(r, s, "cnn") for r, s in hits]
        return []

    # -- quality and encoding ----------------------------------------------------------------

    def _quality(self, image: RGBImage, box: Box, score: float) -> Quality:
        cfg = self.config
        size = min(box.width, box.height)
        sharp = sharpness(image, box)
        reasons: list[str] = []
        if size < cfg.min_face_px:
            reasons.append("too_small")
        if sharp < cfg.min_sharpness:
            reasons.append("blurry")
        return Quality(size_px=size, sharpness=sharp, score=score, reasons=tuple(reasons))

    @property
    def model_version(self) -> str:
        """The version of the encodings this engine makes (see :data:`MODEL_VERSION`)."""
        return self.config.model_version

    def _encode(self, image: RGBImage, rects: Sequence[Any]) -> list[Encoding]:
        predictor = self._m.pose68 if self.config.landmarks == "large" else self._m.pose5
        jitters = self.config.num_jitters
        out: list[Encoding] = []
        for rect in rects:
            shape = predictor(image, rect)
            vec = np.asarray(
                self._m.encoder.compute_face_descriptor(image, shape, jitters), dtype=np.float32
            )
            if self.config.mirror:
                crop, flipped = _mirrored_region(image, rect)
                mirrored = self._m.encoder.compute_face_descriptor(
                    crop, predictor(crop, flipped), jitters
                )
                vec = (vec + np.asarray(mirrored, dtype=np.float32)) / 2.0
            out.append(vec)
        return out

    def faces(self, image: RGBImage) -> list[Face]:
        """Detect every face in an RGB array, gate each on quality and encode those that pass."""
        found = self.candidates(image)
        encodings = iter(self.encode(image, [c for c in found if c.quality.passed]))
        return [
            Face(c.box, c.detector, c.quality, next(encodings) if c.quality.passed else None)
            for c in found
        ]

    def candidates(self, image: RGBImage) -> list[Candidate]:
        """Detect and gate every face in an RGB array without encoding any: encoding costs
        most of a face's time, and a video tracker encodes only a few frames of each face."""
        h, w = image.shape[:2]
        out = []
        for d in self.detect(image):
            box = _clip(d.rect, w, h)
            out.append(Candidate(box, d.detector, self._quality(image, box, d.score), d.rect))
        return out

    def candidates_in(self, image: RGBImage, regions: Sequence[Box]) -> list[Candidate]:
        """Like :meth:`candidates`, but searching only ``regions`` of the frame (boxes in its
        pixels, clipped to it): a video detector looks near the faces it already follows.

        Each region is searched as the full frame would be: downscaled by the same factor and
        with the same upsampling, so a face inside a region gets the same box as from
        :meth:`candidates`. No fallback runs: they are for portraits, and on a small crop they
        would run on every miss (the CNN detector costs about 80x a HOG pass). Regions should
        not overlap: a face in two would be found twice."""
        cfg = self.config
        h, w = image.shape[:2]
        scale = min(1.0, cfg.max_detect_side / max(h, w))
        upsample = 1 if max(round(w * scale), round(h * scale)) <= cfg.upsample_below else 0
        found: list[Detection] = []
        for region in regions:
            top, bottom = max(0, region.top), min(h, region.bottom)
            left, right = max(0, region.left), min(w, region.right)
            if bottom - top < 2 or right - left < 2:
                continue
            crop = np.ascontiguousarray(image[top:bottom, left:right])
            if scale < 1.0:
                size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
                crop = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))
            for rect, score in self._hog(crop, upsample):
                mapped = _scale_rect(rect, 1.0 / scale, 0, 0)
                found.append(Detection(_scale_rect(mapped, 1.0, left, top), float(score), "hog"))
        out = []
        for d in sorted(found, key=lambda d: -d.score):
            box = _clip(d.rect, w, h)
            out.append(Candidate(box, d.detector, self._quality(image, box, d.score), d.rect))
        return out

    def encode(self, image: RGBImage, candidates: Sequence[Candidate]) -> list[Encoding]:
        """The encodings of faces :meth:`candidates` found in the same ``image``."""
        return self._encode(image, [c.rect for c in candidates])

    def faces_in(self, source: str | Path | bytes) -> list[Face]:
        """Load an image (path or bytes, see :func:`load_image`) and return its faces."""
        return self.faces(load_image(source, max_pixels=self.config.max_pixels))


def _mirrored_region(image: RGBImage, rect: Any) -> tuple[RGBImage, Any]:
    """The face's surroundings flipped left-right, and the face's box in that flipped crop.

    Only a margin around the face is flipped (a copy of the whole frame would cost more than
    the landmarks), wide enough for dlib's aligned 150 px chip with its 25% padding."""
    h, w = image.shape[:2]
    fw, fh = rect.right() - rect.left(), rect.bottom() - rect.top()
    left, right = max(0, rect.left() - fw), min(w, rect.right() + fw + 1)
    top, bottom = max(0, rect.top() - fh), min(h, rect.bottom() + fh + 1)
    crop = np.ascontiguousarray(image[top:bottom, left:right][:, ::-1])
    cw = right - left
    x0, x1 = rect.left() - left, rect.right() - left
    flipped = dlib.rectangle(cw - 1 - x1, rect.top() - top, cw - 1 - x0, rect.bottom() - top)
    return crop, flipped


def _scale_rect(rect: Any, factor: float, dx: int, dy: int) -> Any:
    return dlib.rectangle(
        round((rect.left() + dx) * factor),
        round((rect.top() + dy) * factor),
        round((rect.right() + dx) * factor),
        round((rect.bottom() + dy) * factor),
    )


def _clip(rect: Any, width: int, height: int) -> Box:
    return Box(
        top=max(0, int(rect.top())),
        right=min(width, int(rect.right()) + 1),
        bottom=min(height, int(rect.bottom()) + 1),
        left=max(0, int(rect.left())),
    )


def face_distance(a: Encoding, b: Encoding) -> float:
    """Euclidean distance between two encodings, dlib's unit (its tolerance is 0.6)."""
    return float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64)))
