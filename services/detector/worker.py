"""The detector stage: camera frames in (``frames.v1``), one observation per usable face out.

:class:`DetectorHandler` is pure logic run by the shared :class:`~facestream.runtime.runner.Runner`:
it checks the frame's headers and key, and returns one :class:`FaceObservation` per face that
passed the quality gate, made by :func:`~facestream.core.detection.observe_frame` (the code a
camera detecting at the edge runs too: the same frame gives the same observations). Frames come
keyed by ``store/camera`` (one camera's frames in order on one detector, a store's cameras over all
of them); observations go out keyed by store, so that all of a store's faces land in one
partition of ``encodings.v1`` and the matcher keeps its per-store order. A frame that can never
be handled raises :class:`Poison` and is dead-lettered by the runner.

Frames a camera marks as video go to :class:`~facestream.core.passes.VideoPasses` instead: one
observation per person pass, published when the pass ends. Its state (the open passes) is kept
as of the last commit, and a batch handled again (its outputs were not acknowledged) starts
from that copy, so it gives the same observations. Before partitions move to another detector,
or the detector stops, their cameras' open passes are ended as of the last commit and published
(:meth:`DetectorHandler.drain`); only a crash loses them.

After each commit the detector publishes, per camera whose frames it handled, a
:class:`~facestream.schemas.CameraProgress` on ``encodings.v1`` (keyed by the store, so in order
with the camera's observations): no later observation of the camera will end (a pass's last
sighting, a still's capture) before the earliest last sighting of its open passes, or, with
none open, just past its latest committed frame (:func:`~facestream.core.passes.promise`). It
also greets each camera it starts following, before the camera's first face. The matcher
decides a store's faces in capture order from these, whichever detectors its cameras' frames
went through (docs/pipeline.md, "Capture order").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Literal

from kafka import TopicPartition
from prometheus_client import Counter

# DetectorSettings is re-exported for the CLI, tests and benchmarks that import it from here;
# it lives in the core because a camera detecting at the edge is tuned by the same variables.
from facestream.core.detection import DetectorSettings as DetectorSettings
from facestream.core.detection import observation_key, observe_frame
from facestream.core.engine import FaceEngine
from facestream.core.images import ImageError
from facestream.core.passes import JUST_PAST, CameraKey, CameraPasses, VideoPasses, promise
from facestream.runtime import metrics
from facestream.runtime.logs import add_log_context
from facestream.runtime.runner import Handler, KafkaRecord, Output, Poison
from facestream.schemas import CameraProgress, FaceObservation, FrameMeta, SchemaError
from facestream.schemas.keys import PROGRESS, frame_key, progress_key

log = logging.getLogger(__name__)

STAGE = "detector"

FACES_REJECTED = Counter(
    "facestream_faces_rejected_total",
    "Detected faces that failed the quality gate, by reason (a face can fail for several).",
    ["reason"],
)
FRAMES = Counter(
    "facestream_frames_total",
    "Frames handled by the detector: stills with usable faces, with faces all rejected, or "
    "none; video frames (result=video: their faces go to passes).",
    ["result"],
)
FRAME_KEYS = Counter(
    "facestream_frame_keys_total",
    "Frames by the form of their key: camera (store/camera) or store (the store id alone, from "
    "cameras not yet upgraded). An upgrade is complete once form=store stops growing.",
    ["form"],
)
VIDEO_FRAMES = Counter(
    "facestream_video_frames_total",
    "Video frames by what was searched: the whole frame, only near the faces followed, or "
    "nothing (nothing moved and nobody in view).",
    ["search"],
)
PASSES = Counter(
    "facestream_passes_total",
    "Person passes on video cameras: published as an observation (at their end, or early when "
    "their partition moves or the detector stops), or dropped open (drain not possible).",
    ["outcome"],
)

CAMERAS_EVICTED = Counter(
    "facestream_video_cameras_evicted_total",
    "Video cameras forgotten to stay within FACESTREAM_DETECTOR_VIDEO_MAX_CAMERAS (their open "
    "passes published early). Growing steadily: more cameras than the bound, or frames naming "
    "ever new cameras.",
)

Place = tuple[str, int]
"""A record's ``(topic, partition)``."""


class DetectorHandler(Handler):
    """Frame in, :class:`FaceObservation` outputs out. Holds no Kafka client."""

    stage = STAGE

    def __init__(
        self,
        engine: FaceEngine,
        *,
        encodings_topic: str,
        passes: VideoPasses | None = None,
        progress: bool = True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.encodings_topic = encodings_topic
        self.progress = progress
        """Whether to publish each camera's progress after a commit (DetectorSettings.progress)."""
        self.passes = passes
        """None: video frames are observed face by face, as stills."""
        self.clock = clock
        self._handled: dict[Place, int] = {}
        """The last offset handled per partition: a record at or below it is handled again."""
        self._where: dict[CameraKey, Place] = {}
        """The partition of each video camera's frames."""
        self._committed: tuple[dict[CameraKey, CameraPasses], dict[Place, int]] = ({}, {})
        """The cameras' passes and ``_handled`` as of the last commit."""
        self._latest: dict[CameraKey, tuple[Place, datetime]] = {}
        """Each camera's partition and latest frame time (still or video)."""
        self._promised: dict[CameraKey, datetime] = {}
        """The ``before`` of each camera's last progress record (a camera not in it has not been
        greeted)."""
        self._promise: dict[CameraKey, datetime] = {}
        """Each camera's ``before`` as of the last commit (published after it)."""
        self._acknowledged: set[CameraKey] = set()
        """The cameras whose greeting was acknowledged (as of the last commit)."""

    def handle(self, record: KafkaRecord) -> Sequence[Output]:
        """The frame's observations (one per face that passed the gate, best score first).

        Raises :class:`Poison` for a frame that can never be handled: bad or missing headers
        (``invalid``, ``unknown_version``), a key that names another store or camera than the
        headers (``key_mismatch``), or bytes that are not a usable image (``image_<reason>`` of
        :class:`ImageError`).
        """
        meta = self._meta(record)
        add_log_context(store=meta.store_id, camera=meta.camera_id, frame=meta.frame_id)
        place = (record.topic, record.partition)
        if record.offset <= self._handled.get(place, -1):
            self._rewind(place)
        if meta.video is not None and self.passes is not None:
            observations = self._video(self.passes, meta, record.value or b"", place)
        elif meta.video == "end":
            observations = []  # passes are off: every frame's faces went out already
        else:
            observations = self._still(meta, record.value or b"")
        self._handled[place] = record.offset
        key = (meta.store_id, meta.camera_id)
        latest = self._latest.get(key)
        if latest is None or latest[1] < meta.captured_at:
            self._latest[key] = (place, meta.captured_at)
        delay = (self.clock() - meta.captured_at).total_seconds()
        metrics.EVENT_DELAY.labels(STAGE).observe(max(0.0, delay))
        outputs = self._outputs(observations)
        if self.progress and key not in self._promised:
            # A camera this detector starts following: made known to the matcher before its
            # first face. Its frames before this one were committed by whoever had them (it
            # is the first of the camera since the partition came here), so a replay starts
            # at it or after: nothing of the camera will be captured before it.
            self._promised[key] = meta.captured_at
            outputs.insert(0, self._progress_output(key, meta.captured_at))
        return outputs

    def _progress_output(self, key: CameraKey, before: datetime) -> Output:
        progress = CameraProgress(store_id=key[0], camera_id=key[1], before=before)
        return Output(
            self.encodings_topic,
            progress.to_bytes(),
            key=progress_key(progress),
            headers=[PROGRESS],
            kind="progress",
        )

    def _outputs(self, observations: Sequence[FaceObservation]) -> list[Output]:
        # Keyed by store, whatever the frame's key: one matcher owns a store's observations.
        return [
            Output(
                self.encodings_topic,
                observation.to_bytes(),
                key=observation_key(observation),
                kind="observation",
            )
            for observation in observations
        ]

    def before_commit(self) -> None:
        if self.passes is not None and self.passes.cameras:
            self._committed = (self.passes.snapshot(), dict(self._handled))
        else:
            self._committed = ({}, dict(self._handled))
        if self.progress:
            self._promise = {
                key: self._before(key, latest) for key, (_, latest) in self._latest.items()
            }
            self._acknowledged = set(self._promised)

    def _before(self, key: CameraKey, latest: datetime) -> datetime:
        """What the camera's committed frames promise (:func:`~facestream.core.passes.promise`)."""
        return promise(latest, self.passes.cameras.get(key) if self.passes is not None else None)

    def after_commit(self) -> Sequence[Output]:
        """A :class:`CameraProgress` for each camera whose promise moved on with this commit."""
        outputs = []
        for key, before in self._promise.items():
            if key in self._latest and before > self._promised.get(key, before - JUST_PAST):
                self._promised[key] = before
                outputs.append(self._progress_output(key, before))
        self._promise = {}
        return outputs

    def drain(self, partitions: Sequence[TopicPartition] | None) -> Sequence[Output]:
        """The open passes of the cameras on ``partitions`` (None: every camera), ended as of
        the last commit: the frames behind them are committed, and the next owner of a camera
        follows its faces from the next frame on (a person in view is then seen as a second
        pass, which the sink joins into the same visit)."""
        if self.passes is None:
            return []
        places = None if partitions is None else {(tp.topic, tp.partition) for tp in partitions}
        cameras = [key for key, where in self._where.items() if places is None or where in places]
        # What the committed frames give: a batch not committed is replayed by the next owner.
        self.passes.restore(self._committed[0], cameras)
        ended = [o for key in cameras for o in self.passes.end_camera(key)]
        for key in cameras:  # owed once: neither a later drain nor a rewind brings them back
            del self._where[key]
            self._committed[0].pop(key, None)
        self._forget_progress(places)
        PASSES.labels("published").inc(len(ended))
        if ended:
            log.info(
                "%d open passes of %d cameras ended early and published", len(ended), len(cameras)
            )
        return self._outputs(ended)

    def _forget_progress(self, places: set[Place] | None) -> None:
        """The cameras of ``places`` (None: all) are another detector's to speak for now."""
        for key, (place, _) in list(self._latest.items()):
            if places is None or place in places:
                del self._latest[key]
                self._promised.pop(key, None)
                self._promise.pop(key, None)
                self._acknowledged.discard(key)

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._forget_progress(gone)
        cameras = [key for key, place in self._where.items() if place in gone]
        for key in cameras:
            del self._where[key]
        for place in gone:
            self._handled.pop(place, None)
            self._committed[1].pop(place, None)
        if self.passes is not None and cameras:
            lost = self.passes.drop(cameras)
            PASSES.labels("dropped").inc(lost)
            if lost:
                log.warning(
                    "%d open passes of %d cameras dropped with partitions %s",
                    lost,
                    len(cameras),
                    sorted(p for _, p in gone),
                )

    def _rewind(self, place: Place) -> None:
        """The partition's records are being handled again (a batch whose outputs were not
        acknowledged): its cameras go back to their state as of the last commit."""
        saved, handled = self._committed
        self._handled[place] = handled.get(place, -1)
        for key, (where, _) in self._latest.items():
            if where == place and key not in self._acknowledged:
                self._promised.pop(key, None)  # greeting not acknowledged: greet it again
        if self.passes is None:
            return
        cameras = [key for key, where in self._where.items() if where == place]
        self.passes.restore(saved, cameras)
        log.info("records handled again: %d cameras back to the last commit", len(cameras))

    def _still(self, meta: FrameMeta, data: bytes) -> Sequence[FaceObservation]:
        try:
            seen = observe_frame(self.engine, meta, data)
        except ImageError as exc:
            raise Poison(f"image_{exc.reason}", exc.message) from exc
        for reason in seen.rejections:
            FACES_REJECTED.labels(reason).inc()
        FRAMES.labels(seen.result).inc()
        log.debug(
            "%dx%d, %d faces, %d observations",
            seen.width,
            seen.height,
            len(seen.faces),
            len(seen.observations),
        )
        return seen.observations

    def _video(
        self, passes: VideoPasses, meta: FrameMeta, data: bytes, place: Place
    ) -> Sequence[FaceObservation]:
        key = (meta.store_id, meta.camera_id)
        self._where[key] = place
        if meta.video == "end":
            ended = passes.end(meta)
            log.debug("video ended: %d passes", len(ended))
        else:
            # A failure part-way through must not leave the camera half-updated: the runner
            # handles the same frame again.
            before = passes.snapshot_of(key)
            try:
                seen = passes.frame(meta, data)
            except ImageError as exc:
                raise Poison(f"image_{exc.reason}", exc.message) from exc
            except Exception:
                passes.restore(before, [key])
                raise
            scan = seen.scan
            VIDEO_FRAMES.labels("full" if scan.full else "near" if scan.regions else "none").inc()
            for reason in seen.rejections:
                FACES_REJECTED.labels(reason).inc()
            FRAMES.labels("video").inc()
            ended = seen.observations
            for gone in seen.evicted:
                # Its passes go out with this frame; were its partition handled again, the
                # camera is not brought back (it is not this frame's to restore).
                self._where.pop(gone, None)
                CAMERAS_EVICTED.inc()
                log.warning(
                    "following %d video cameras at most: %s/%s forgotten (least recently "
                    "seen), its open passes published",
                    passes.max_cameras,
                    *gone,
                )
            log.debug(
                "%dx%d, %d faces, %d passes ended",
                seen.width,
                seen.height,
                seen.faces,
                len(ended),
            )
        PASSES.labels("published").inc(len(ended))
        return ended

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
