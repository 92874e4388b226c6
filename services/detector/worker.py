"""The detector stage: camera frames in (``frames.v1``), one observation per usable face out.

:class:`DetectorHandler` is pure logic run by the shared :class:`~facestream.runtime.runner.Runner`:
it checks the frame's headers and key, and returns one :class:`FaceObservation` per face that
passed the quality gate, made by :func:`~facestream.core.detection.observe_frame` (the code a
camera detecting at the edge runs too: the same frame gives the same observations). Frames come
keyed by ``store/camera`` (one camera's frames in order on one detector, a store's cameras over all
of them); observations go out keyed by store, so that all of a store's faces land in one
partition of ``encodings.v1`` and the matcher keeps its per-store order. A frame that can never
be handled raises :class:`Poison` and is dead-lettered by the runner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Literal

from prometheus_client import Counter

# DetectorSettings is re-exported for the CLI, tests and benchmarks that import it from here;
# it lives in the core because a camera detecting at the edge is tuned by the same variables.
from facestream.core.detection import DetectorSettings as DetectorSettings
from facestream.core.detection import observation_key, observe_frame
from facestream.core.engine import FaceEngine
from facestream.core.images import ImageError
from facestream.runtime import metrics
from facestream.runtime.logs import add_log_context
from facestream.runtime.runner import Handler, KafkaRecord, Output, Poison
from facestream.schemas import FrameMeta, SchemaError
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
            seen = observe_frame(self.engine, meta, record.value or b"")
        except ImageError as exc:
            raise Poison(f"image_{exc.reason}", exc.message) from exc
        for reason in seen.rejections:
            FACES_REJECTED.labels(reason).inc()
        FRAMES.labels(seen.result).inc()
        delay = (self.clock() - meta.captured_at).total_seconds()
        metrics.EVENT_DELAY.labels(STAGE).observe(max(0.0, delay))
        log.debug(
            "%dx%d, %d faces, %d observations",
            seen.width,
            seen.height,
            len(seen.faces),
            len(seen.observations),
        )
        # Keyed by store, whatever the frame's key: one matcher owns a store's observations.
        return [
            Output(
                self.encodings_topic,
                observation.to_bytes(),
                key=observation_key(observation),
                kind="observation",
            )
            for observation in seen.observations
        ]

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
