"""The detector stage: camera frames in (``frames.v1``), one observation per usable face out.

:class:`DetectorHandler` is pure logic run by the shared :class:`~facestream.runtime.runner.Runner`:
it decodes the frame headers and image, finds and encodes faces with the :class:`FaceEngine`,
and returns one :class:`FaceObservation` per face that passed the quality gate. Frames come keyed
by ``store/camera`` (one camera's frames in order on one detector, a store's cameras over all
of them); observations go out keyed by store, so that all of a store's faces land in one
partition of ``encodings.v1`` and the matcher keeps its per-store order. A frame that can never
be handled raises :class:`Poison` and is dead-lettered by the runner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from prometheus_client import Counter
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from facestream.core.engine import EngineConfig, Face, FaceEngine, Fallback
from facestream.core.images import DEFAULT_MAX_PIXELS, ImageError, load_image
from facestream.runtime import metrics
from facestream.runtime.logs import add_log_context
from facestream.runtime.runner import Handler, KafkaRecord, Output, Poison
from facestream.schemas import FaceObservation, FrameMeta, SchemaError, vector_to_wire
from facestream.schemas.keys import frame_key

log = logging.getLogger(__name__)

STAGE = "detector"

FACES_REJECTED = Counter(
    "facestream_faces_rejected_total",
    "Detected faces that failed the quality gate, by reason (a face can fail for several).",
    ["reason"],
)
FRAMES = Counter(
    "facestream_frames_total",
    "Frames handled by the detector: with usable faces, with faces all rejected, or none.",
    ["result"],
)
FRAME_KEYS = Counter(
    "facestream_frame_keys_total",
    "Frames by the form of their key: camera (store/camera) or store (the store id alone, from "
    "cameras not yet upgraded). An upgrade is complete once form=store stops growing.",
    ["form"],
)


class DetectorSettings(BaseSettings):
    """Tuning of the detector stage, from ``FACESTREAM_DETECTOR_*`` environment variables."""

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


class DetectorHandler(Handler):
    """Frame in, :class:`FaceObservation` outputs out. Holds no Kafka client."""

    stage = STAGE

    def __init__(
        self,
        engine: FaceEngine,
        *,
        encodings_topic: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.encodings_topic = encodings_topic
        self.clock = clock

    def handle(self, record: KafkaRecord) -> Sequence[Output]:
        """The frame's observations (one per face that passed the gate, best score first).

        Raises :class:`Poison` for a frame that can never be handled: bad or missing headers
        (``invalid``, ``unknown_version``), a key that names another store or camera than the
        headers (``key_mismatch``), or bytes that are not a usable image (``image_<reason>`` of
        :class:`ImageError`).
        """
        meta = self._meta(record)
        add_log_context(store=meta.store_id, camera=meta.camera_id, frame=meta.frame_id)
        try:
            image = load_image(record.value or b"", max_pixels=self.engine.config.max_pixels)
        except ImageError as exc:
            raise Poison(f"image_{exc.reason}", exc.message) from exc
        faces = self.engine.faces(image)
        outputs = [self._observation(meta, index, face) for index, face in enumerate(faces)]
        kept = [out for out in outputs if out is not None]
        result = "faces" if kept else ("rejected" if faces else "no_face")
        FRAMES.labels(result).inc()
        delay = (self.clock() - meta.captured_at).total_seconds()
        metrics.EVENT_DELAY.labels(STAGE).observe(max(0.0, delay))
        log.debug(
            "%dx%d, %d faces, %d observations",
            image.shape[1],
            image.shape[0],
            len(faces),
            len(kept),
        )
        return kept

    def _meta(self, record: KafkaRecord) -> FrameMeta:
        """The frame's headers, checked against the record key."""
        try:
            meta = FrameMeta.from_headers(record.headers)
        except SchemaError as exc:
            # Same reasons as every stage's schema errors (invalid, unknown_version).
            raise Poison(exc.reason, f"frame headers: {exc.message}") from exc
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        FRAME_KEYS.labels(_key_form(key, meta)).inc()
        return meta

    def _observation(self, meta: FrameMeta, index: int, face: Face) -> Output | None:
        """The output for one detected face, or None (counted) when it failed the gate.

        ``index`` is the face's place among all detected faces (best detector score first),
        so an observation id does not shift when the gate's thresholds change.
        """
        if face.encoding is None or not face.quality.passed:
            for reason in face.quality.reasons or ("no_encoding",):
                FACES_REJECTED.labels(reason).inc()
            return None
        observation = FaceObservation(
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
            model_version=self.engine.model_version,
            encoding=vector_to_wire(face.encoding),
        )
        # Keyed by store, whatever the frame's key: one matcher owns a store's observations.
        return Output(
            self.encodings_topic,
            observation.to_bytes(),
            key=meta.store_id.encode(),
            kind="observation",
        )


def _key_form(key: str | None, meta: FrameMeta) -> Literal["camera", "store"]:
    """``camera`` for the key ``store/camera`` of the frame's headers, ``store`` for its store id
    alone (the key of cameras from before camera keys, accepted while a deployment upgrades);
    :class:`Poison` (``key_mismatch``) for anything else.

    The key picks the partition, so a frame keyed otherwise would sit beside another camera's
    frames and break the order the key promises.
    """
    expected = frame_key(meta.store_id, meta.camera_id)
    if key == expected:
        return "camera"
    if key == meta.store_id:
        return "store"
    raise Poison(
        "key_mismatch",
        f"record key {key!r} is not the frame's {expected!r} (store/camera) "
        f"nor its store_id {meta.store_id!r}",
    )
