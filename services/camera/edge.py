"""Detection at the edge (``facestream camera --detect``): the camera finds the faces itself and
publishes observations to ``encodings.v1``; no frame goes to ``frames.v1``.

For a store with a small box beside its cameras: an observation is about 1 KB (a 128-d encoding
and its metadata) where a frame is a JPEG of tens of kilobytes, and no image of a face leaves
the store. docs/video.md ("Detection at the edge") has the measured bytes and when to choose it.

The contract is the central detector's, by construction rather than by imitation: the frames
are the ones the camera would have published (a video's frames JPEG-encoded at the same
quality), their metadata and frame ids are :func:`~.publisher.frame_meta`'s, and each frame is
decoded, detected, gated and turned into observations by
:func:`facestream.core.detection.observe_frame`, the code the detector runs, tuned by the same
``FACESTREAM_DETECTOR_*`` settings. So a frame gives the same observation ids, boxes, encodings
and ``model_version`` here as centrally, keyed by store as the detector keys them, and the
matcher cannot tell where a face was found. One difference: a frame whose bytes are not a
usable image is skipped and counted here (the central detector dead-letters it), as the
camera already skips a file it cannot read.

Like the central detector, the camera also publishes its progress (a
:class:`~facestream.schemas.CameraProgress`, keyed by store), from which the matcher decides a
store's faces in capture order: before the camera's first observation, then at most once a
second of the camera's event time, and at the end. It has no commit to wait for: what it has
sent, it will not send again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kafka import KafkaProducer

from facestream.core.detection import FrameObservations, observation_key, observe_frame
from facestream.core.engine import FaceEngine
from facestream.core.images import ImageError
from facestream.core.passes import CameraKey, PassFrame, VideoPasses, promise
from facestream.schemas import CameraProgress, FaceObservation
from facestream.schemas.keys import PROGRESS, progress_key
from facestream.services.camera.publisher import (
    Frame,
    PublishReport,
    Skipped,
    check_id,
    flush,
    frame_meta,
)

log = logging.getLogger(__name__)

PROGRESS_EVERY = timedelta(seconds=1)
"""A camera's progress is sent when its promise moved on by this much (event time)."""


def record_bytes(key: bytes, value: bytes, headers: Iterable[tuple[str, bytes]] = ()) -> int:
    """The bytes of a record's key, value and headers: what it adds to the uplink, before
    Kafka's framing (a few dozen bytes a record, batched) and compression (the producers use
    none, and a JPEG would not shrink)."""
    return len(key) + len(value) + sum(len(name) + len(data) for name, data in headers)


@dataclass
class EdgeReport(PublishReport):
    """What one run of a camera detecting at the edge analysed and published: ``sent`` and
    ``failed`` count observations, ``skipped`` inputs that could not be read or whose bytes are
    not a usable image."""

    frames: int = 0
    """Frames analysed (decoded and searched for faces)."""
    faces: int = 0
    """Faces found in them, whether they passed the quality gate or not."""
    rejected: Counter[str] = field(default_factory=Counter)
    """The quality gate's reasons over the faces not observed."""
    observation_bytes: int = 0
    """The observation records sent (:func:`record_bytes`)."""
    frame_bytes: int = 0
    """What the analysed frames would have sent as ``frames.v1`` records, keyed by store."""
    detect_seconds: float = 0.0
    """Wall time spent decoding, detecting and encoding."""
    passes: int = 0
    """Observations that are a video's person passes (the rest are stills' faces)."""
    progress: int = 0
    """Camera progress records sent (not counted in ``sent``)."""
    progress_bytes: int = 0
    """The camera progress records sent (:func:`record_bytes`)."""


def detect_and_publish(
    producer: KafkaProducer,
    topic: str,
    store_id: str,
    items: Iterable[Frame | Skipped],
    engine: FaceEngine,
    *,
    passes: VideoPasses | None = None,
    max_frames: int | None = None,
    flush_timeout: float = 30.0,
) -> EdgeReport:
    """Find the faces of ``items`` in order and send their observations to ``topic`` (the
    ``encodings.v1`` of the deployment), keyed by store; flush, and count what happened.

    ``store_id`` is the store of the frames that do not name their own (as for
    :func:`~.publisher.publish`). Video frames go through ``passes`` when given (one
    observation per person pass, as the central detector makes them; every pass still open is
    published when the input ends); without it every face of every frame is an observation.
    Stops after ``max_frames`` frames analysed. A failed send is counted in the report (and
    logged), not raised, so that one run reports every failure.
    """
    store_id = check_id(store_id, "store")
    latest: dict[CameraKey, datetime] = {}
    report = EdgeReport(topic=topic)
    on_error = report.on_failure(store_id, "an observation")
    if max_frames is not None and max_frames <= 0:
        return report

    def send(observations: Iterable[FaceObservation], video: bool) -> None:
        for observation in observations:
            key, value = observation_key(observation), observation.to_bytes()
            producer.send(topic, key=key, value=value).add_errback(on_error)
            report.sent += 1
            report.passes += video
            report.observation_bytes += record_bytes(key, value)

    promised: dict[CameraKey, datetime] = {}

    def progress(key: CameraKey, before: datetime, every: timedelta = PROGRESS_EVERY) -> None:
        """The camera's promise, when it moved on by ``every`` since the last one sent."""
        last = promised.get(key)
        if last is not None and (before <= last or before - last < every):
            return
        promised[key] = before
        record = CameraProgress(store_id=key[0], camera_id=key[1], before=before)
        pkey, value = progress_key(record), record.to_bytes()
        producer.send(topic, key=pkey, value=value, headers=[PROGRESS]).add_errback(
            report.on_failure(store_id, "a camera progress")
        )
        report.progress += 1
        report.progress_bytes += record_bytes(pkey, value, [PROGRESS])

    for item in items:
        if isinstance(item, Skipped):
            report.skip(store_id, item.source, item.reason)
            continue
        meta = frame_meta(store_id, item)
        started = time.perf_counter()
        video = item.video and passes is not None
        try:
            if passes is not None and item.video:
                seen: FrameObservations | PassFrame = passes.frame(meta, item.data)
            else:
                seen = observe_frame(engine, meta, item.data)
        except ImageError as exc:
            report.skip(store_id, item.source, f"image_{exc.reason}: {exc.message}")
            continue
        finally:
            report.detect_seconds += time.perf_counter() - started
        report.frames += 1
        faces = seen.faces if isinstance(seen, PassFrame) else len(seen.faces)
        report.faces += faces
        report.rejected.update(seen.rejections)
        # What the camera would have sent instead: this frame, keyed by its store.
        report.frame_bytes += record_bytes(meta.store_id.encode(), item.data, meta.to_headers())
        key = (meta.store_id, meta.camera_id)
        if key not in promised:  # the camera made known to the matcher before its first face
            progress(key, meta.captured_at)
        send(seen.observations, video)
        latest[key] = max(latest.get(key, meta.captured_at), meta.captured_at)
        open_passes = passes.cameras.get(key) if passes is not None and video else None
        progress(key, promise(latest[key], open_passes))
        log.debug(
            "store=%s camera=%s frame=%s: %s, %d faces, %d observations -> %s",
            meta.store_id,
            meta.camera_id,
            meta.frame_id,
            item.source,
            faces,
            len(seen.observations),
            topic,
        )
        if max_frames is not None and report.frames >= max_frames:
            break  # before pulling another item: a video is not read further
    if passes is not None:
        started = time.perf_counter()
        send(passes.end_all(), True)
        report.detect_seconds += time.perf_counter() - started
    for key, at in latest.items():  # every pass is out: the faces up to the last frame may go
        progress(key, promise(at, None), every=timedelta(0))
    flush(producer, flush_timeout, "observations")
    log.info(
        "store=%s: %d frames analysed, %d observations sent to %s, %d failed, %d skipped",
        store_id,
        report.frames,
        report.sent,
        topic,
        report.failed,
        report.skipped,
    )
    return report
