"""The detector's work on one frame, wherever it runs: image bytes and the frame's metadata in,
one :class:`FaceObservation` per usable face out.

Two places run it: the central detector (``services.detector``, frames read from ``frames.v1``)
and a camera that detects at the edge (``facestream camera --detect``, frames read from the
video itself). Services may not import each other, so the one implementation lives here, with
the settings that tune it: the same ``FACESTREAM_DETECTOR_*`` variables configure the engine in
both places, and the same frame gives the same observations (ids, boxes, encodings,
``model_version``) on either side. What is particular to each stays with it: the detector checks
a record's headers and key and counts its Prometheus metrics; the camera derives frame ids and
publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from facestream.core.engine import EngineConfig, Face, FaceEngine, Fallback
from facestream.core.images import DEFAULT_MAX_PIXELS, load_image
from facestream.schemas import FaceObservation, FrameMeta, vector_to_wire


class DetectorSettings(BaseSettings):
    """Tuning of the detector, from ``FACESTREAM_DETECTOR_*`` environment variables.

    The engine's fields apply wherever the detector runs; ``max_batch`` and
    ``group_instance_id`` only to the central detector's consumer (a camera detecting at the
    edge reads no topic and ignores them, so one environment serves both).
    """

    model_config = SettingsConfigDict(
        env_prefix="FACESTREAM_DETECTOR_", extra="ignore", frozen=True
    )

    max_detect_side: int = Field(default=1280, ge=64)
    """Frames larger than this (longest side) are downscaled before detection."""
    min_face_px: int = Field(default=40, ge=1)
    min_sharpness: float = Field(default=4.0, ge=0.0)
    fallbacks: Annotated[tuple[Fallback, ...], NoDecode] = ()
    """None by default. The engine runs fallbacks on images up to 640 px, which includes every
    480p camera frame, and most camera frames show nobody: with all three, an empty 640x480
    frame took 10-17 s instead of 0.1 s (measured on one core). Set e.g. ``upsample,pad``
    for cameras that deliver tight face crops."""
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    """Frames with more pixels are refused before decoding (decompression bombs)."""
    mirror: bool = True
    """Average each encoding with its mirror image's (more accurate, twice the encoding cost;
    every encoding a gallery compares must be made the same way)."""
    max_batch: int = Field(default=10, ge=1, le=500)
    """Records per poll. A frame costs 0.1-0.4 s on one core, so 10 keeps a batch (and what a
    crash replays) to a few seconds."""
    video_passes: bool = True
    """Frames a camera marks as video (``FrameMeta.video``) are followed face by face, and
    each person's pass through the view is one observation (:mod:`facestream.core.passes`).
    False: every face of every frame is an observation, as for still photos."""
    video_search: bool = True
    """On video, search no frame where nothing moved and near the faces followed before the
    whole frame (:mod:`facestream.core.regions`). False: every whole frame is searched."""
    pass_max_gap_seconds: float = Field(default=1.0, gt=0, le=60)
    """A face not seen for this long (of its camera's event time) has left: its pass ends."""
    pass_max_open_seconds: float = Field(default=10.0, gt=0, le=600)
    """A face in view this long is published anyway and goes on as a new pass (bounds the
    latency of a person standing in view, and what a crash can lose)."""
    progress: bool = True
    """After each commit, publish each camera's progress on ``encodings.v1``
    (:class:`~facestream.schemas.CameraProgress`), from which the matcher decides a store's
    faces in capture order. Off only while matchers older than progress records still run:
    they dead-letter them (docs/deploy.md, "Upgrading to camera keys")."""
    video_max_cameras: int = Field(default=64, ge=1, le=100_000)
    """Video cameras followed at once. Past it, the camera whose latest frame is the oldest
    has its open passes published and is forgotten (it starts afresh with its next frame), so
    frames naming ever new cameras cannot grow a detector without bound. A detector has the
    CPU for a few cameras only (docs/pipeline-benchmarks.md), so 64 is reached only by cameras
    that stopped without an end record, or by bad input."""
    group_instance_id: str | None = Field(default=None, min_length=1, max_length=200)
    """Static group membership (KIP-345), as the sink's: a detector restarted with the same id
    gets its partitions back at once instead of waiting out its dead predecessor's session
    (45 s). One stable id per replica (the StatefulSet pod name); never two live ones alike."""

    @field_validator("fallbacks", mode="before")
    @classmethod
    def _split_fallbacks(cls, value: Any) -> Any:
        # From the environment: "upsample,pad" (or "" / "none" for no fallbacks).
        if isinstance(value, str):
            if value.strip().lower() in ("", "none"):
                return ()
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def engine_config(self) -> EngineConfig:
        """The :class:`EngineConfig` these settings describe."""
        return EngineConfig(
            max_detect_side=self.max_detect_side,
            min_face_px=self.min_face_px,
            min_sharpness=self.min_sharpness,
            fallbacks=self.fallbacks,
            max_pixels=self.max_pixels,
            mirror=self.mirror,
        )


FrameResult = Literal["faces", "rejected", "no_face"]


@dataclass(frozen=True)
class FrameObservations:
    """What the detector made of one frame."""

    width: int
    height: int
    faces: tuple[Face, ...]
    """Every face found, best detector score first, whether it passed the gate or not."""
    observations: tuple[FaceObservation, ...]
    """One per face that passed the gate and was encoded, in the order of ``faces``."""

    @property
    def rejections(self) -> tuple[str, ...]:
        """The gate's reasons over the faces that were not observed (a face can fail for
        several; one that passed but has no encoding counts as ``no_encoding``)."""
        return tuple(
            reason
            for face in self.faces
            if face.encoding is None or not face.quality.passed
            for reason in face.quality.reasons or ("no_encoding",)
        )

    @property
    def result(self) -> FrameResult:
        """``faces`` when anything was observed, ``rejected`` when faces were found but none
        passed, ``no_face`` when none was found."""
        if self.observations:
            return "faces"
        return "rejected" if self.faces else "no_face"


def observe_frame(engine: FaceEngine, meta: FrameMeta, data: bytes) -> FrameObservations:
    """Decode ``data`` (JPEG, PNG or BMP; at most the engine's ``max_pixels``), find and encode
    its faces, and make one observation per face that passed the quality gate.

    Raises :class:`~facestream.core.images.ImageError` for bytes that are not a usable image:
    the detector dead-letters such a frame, the edge camera skips it.
    """
    image = load_image(data, max_pixels=engine.config.max_pixels)
    faces = tuple(engine.faces(image))
    observations = tuple(
        observation
        for index, face in enumerate(faces)
        if (observation := make_observation(meta, index, face, engine.model_version)) is not None
    )
    return FrameObservations(image.shape[1], image.shape[0], faces, observations)


def make_observation(
    meta: FrameMeta, index: int, face: Face, model_version: str
) -> FaceObservation | None:
    """The observation of one detected face, or None when it failed the gate.

    ``index`` is the face's place among all detected faces (best detector score first), so an
    observation id (``{frame_id}:{index}``) does not shift when the gate's thresholds change,
    and the same frame gives the same ids on a replay or at the edge.
    """
    if face.encoding is None or not face.quality.passed:
        return None
    return FaceObservation(
        observation_id=f"{meta.frame_id}:{index}",
        frame_id=meta.frame_id,
        face_index=index,
        store_id=meta.store_id,
        camera_id=meta.camera_id,
        captured_at=meta.captured_at,
        box=face.box,
        size_px=face.quality.size_px,
        sharpness=round(face.quality.sharpness, 2),
        detector=face.detector,
        model_version=model_version,
        encoding=vector_to_wire(face.encoding),
    )


def observation_key(observation: FaceObservation) -> bytes:
    """The ``encodings.v1`` key of an observation: its store id, whatever the frame's key was,
    so that all of a store's faces land in one partition and one matcher owns the store."""
    return observation.store_id.encode()
