"""Publish camera frames to ``frames.v1``: from a folder or a manifest of timed files (and from
a video, with :mod:`facestream.services.camera.video`).

Each frame goes out as one record: key = the store id (one store, one partition, in order), or
``store/camera`` when asked (:data:`KeyBy`: one camera, one partition; a store's cameras spread
over the detectors), value = the image bytes, headers = :class:`FrameMeta`. Frame ids are
derived from the store, camera, capture time and source name, so publishing the same manifest
again yields the same frame ids, and every id downstream (observations, match events, FaceIds)
is replayed as well.
"""

from __future__ import annotations

import csv
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
from pydantic import TypeAdapter, ValidationError

from facestream.schemas import FrameMeta, derived_id
from facestream.schemas.keys import frame_key
from facestream.schemas.messages import Id

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

IMAGE_TYPES: Final = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".bmp": "image/bmp",
}
MANIFEST_COLUMNS: Final = ("path", "captured_at", "camera", "store")
_ID: Final = TypeAdapter(Id)


def utc_now() -> datetime:
    """The camera's clock: now, in UTC."""
    return datetime.now(UTC)


class CameraError(ValueError):
    """Input the camera cannot publish from (a bad manifest, a video that does not open)."""


@dataclass(frozen=True)
class Frame:
    """One frame ready to publish. ``source`` names it within its input (file name, or video
    name and frame index) and is part of the derived frame id."""

    data: bytes
    camera_id: str
    captured_at: datetime
    source: str
    content_type: str = "image/jpeg"
    store_id: str | None = None
    """The store, where the input names one per frame (a manifest's ``store`` column); else the
    store given to :func:`publish`."""
    video: bool = False
    """A frame of a video: the detector follows its faces across the camera's frames and
    observes each person's pass once (``FrameMeta.video``)."""


@dataclass(frozen=True)
class Skipped:
    """An input item that could not be read (counted and logged, never fatal)."""

    source: str
    reason: str


@dataclass
class PublishReport:
    """What one run published (frames, or with ``--detect`` observations)."""

    topic: str
    sent: int = 0
    failed: int = 0
    """Sends the broker did not acknowledge (end records included)."""
    ends: int = 0
    """End-of-video records sent (:func:`end_meta`), one per video camera; not in ``sent``."""
    skipped: int = 0
    """Inputs that could not be read (missing files)."""
    skipped_sources: list[str] = field(default_factory=list)

    @property
    def published(self) -> int:
        """Records the broker acknowledged."""
        return self.sent - self.failed

    def skip(self, store_id: str, source: str, reason: str) -> None:
        """Count (and log) an input that is not sent."""
        self.skipped += 1
        self.skipped_sources.append(source)
        log.warning("store=%s: skipped %s: %s", store_id, source, reason)

    def on_failure(self, store_id: str, what: str) -> Callable[[BaseException], None]:
        """A send's errback that counts (and logs) the ``what`` the broker did not take: it
        runs on the producer's thread, so the count is locked."""
        lock = threading.Lock()

        def failed(exc: BaseException) -> None:
            with lock:
                self.failed += 1
            log.error(
                "store=%s: %s was not acknowledged by %s: %s", store_id, what, self.topic, exc
            )

        return failed


def flush(producer: KafkaProducer, timeout: float, what: str) -> None:
    """Wait for every send; a :class:`CameraError` when Kafka takes longer than ``timeout``."""
    try:
        producer.flush(timeout=timeout)
    except KafkaTimeoutError as exc:
        raise CameraError(f"Kafka did not acknowledge the {what} within {timeout}s") from exc


def check_id(value: str, what: str) -> str:
    """``value`` if it is a valid id (printable, no separators), else a :class:`CameraError`."""
    try:
        return _ID.validate_python(value)
    except ValidationError as exc:
        raise CameraError(
            f"{what} {value!r} is not a valid id (1-128 of A-Z a-z 0-9 . _ : @ -)"
        ) from exc


def frame_id(store_id: str, frame: Frame) -> str:
    """The frame's id: the same store, camera, time and source always give the same id."""
    return derive_frame_id(store_id, frame.camera_id, frame.captured_at, frame.source)


def derive_frame_id(store_id: str, camera_id: str, captured_at: datetime, source: str) -> str:
    """The id a frame with these fields gets (also for tools that know a frame by its fields,
    such as the counting report joining match events to a simulator's sightings)."""
    return derived_id("frame", store_id, camera_id, captured_at.isoformat(), source)


def frame_meta(store_id: str, frame: Frame) -> FrameMeta:
    """The frame's metadata (the headers it is published with): its own store where it names
    one (a manifest's ``store`` column), else ``store_id``."""
    store = frame.store_id or store_id
    return FrameMeta(
        frame_id=frame_id(store, frame),
        store_id=store,
        camera_id=frame.camera_id,
        captured_at=frame.captured_at,
        content_type=frame.content_type,
        video="frame" if frame.video else None,
    )


END_CONTENT_TYPE: Final = "application/octet-stream"


def end_meta(last: FrameMeta, last_source: str) -> FrameMeta:
    """The end-of-video record of a camera whose last frame was ``last``: no image, stamped
    with that frame's time, so the detector ends the camera's open passes (publishes them)
    instead of waiting for frames that will not come."""
    return FrameMeta(
        frame_id=derive_frame_id(
            last.store_id, last.camera_id, last.captured_at, f"{last_source}#end"
        ),
        store_id=last.store_id,
        camera_id=last.camera_id,
        captured_at=last.captured_at,
        content_type=END_CONTENT_TYPE,
        video="end",
    )


class VideoEnds:
    """The last frame of each video camera in a run, to end each camera's video once the
    input ends (or stops at ``--max-frames``)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[FrameMeta, str]] = {}

    def saw(self, meta: FrameMeta, source: str) -> None:
        if meta.video == "frame":
            self._last[(meta.store_id, meta.camera_id)] = (meta, source)

    def ends(self) -> list[FrameMeta]:
        """One end record per video camera seen, in the order the cameras first appeared."""
        return [end_meta(meta, source) for meta, source in self._last.values()]


def content_type(path: Path) -> str:
    """The frame's content type, from the file's extension."""
    return IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")


# -- sources ----------------------------------------------------------------------------------


def frames_from_dir(directory: Path, camera_id: str, clock: Clock = utc_now) -> Iterator[Frame]:
    """The folder's images (JPEG, PNG, BMP) sorted by name, each stamped when it is published."""
    if not directory.is_dir():
        raise CameraError(f"{directory} is not a folder")
    files = sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_TYPES
    )
    if not files:
        raise CameraError(f"no JPEG, PNG or BMP files in {directory}")
    return _stamped(files, camera_id, clock)


def _stamped(files: list[Path], camera_id: str, clock: Clock) -> Iterator[Frame]:
    for path in files:
        # Read, then stamp: the generator runs as the publisher pulls, so this is publish time.
        data = path.read_bytes()
        yield Frame(data, camera_id, clock(), path.name, content_type(path))


@dataclass(frozen=True)
class ManifestRow:
    line: int
    path: str
    captured_at: datetime
    camera_id: str
    store_id: str | None = None


def read_manifest(manifest: Path, default_camera: str | None) -> list[ManifestRow]:
    """Parse and check the whole manifest (``path,captured_at[,camera][,store]``) before publishing.

    Every time must carry a UTC offset; a row without a camera takes ``default_camera``. All
    problems are reported at once, by line number; nothing is published from a bad manifest.
    """
    try:
        with manifest.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in MANIFEST_COLUMNS[:2] if c not in columns]
            unknown = [c for c in columns if c not in MANIFEST_COLUMNS]
            if missing or unknown:
                raise CameraError(
                    f"{manifest}: the header must be path,captured_at[,camera][,store]; "
                    f"got {','.join(columns) or 'nothing'}"
                )
            reader.fieldnames = columns
            rows: list[ManifestRow] = []
            errors: list[str] = []
            for raw in reader:
                line = reader.line_num
                try:
                    rows.append(_manifest_row(line, raw, default_camera))
                except CameraError as exc:
                    errors.append(f"line {line}: {exc}")
    except OSError as exc:
        raise CameraError(f"cannot read the manifest {manifest}: {exc.strerror or exc}") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CameraError(f"{manifest} is not a UTF-8 CSV file: {exc}") from exc
    if errors:
        shown = "\n  ".join(errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise CameraError(
            f"{manifest}: {len(errors)} bad rows, nothing published:\n  {shown}{more}"
        )
    if not rows:
        raise CameraError(f"{manifest} has no rows")
    return rows


def _manifest_row(line: int, raw: dict[str, str | None], default_camera: str | None) -> ManifestRow:
    path = (raw.get("path") or "").strip()
    when = (raw.get("captured_at") or "").strip()
    camera = (raw.get("camera") or "").strip() or default_camera
    if not path:
        raise CameraError("no path")
    try:
        captured_at = datetime.fromisoformat(when)
    except ValueError as exc:
        raise CameraError(f"captured_at {when!r} is not an ISO-8601 time") from exc
    if captured_at.tzinfo is None or captured_at.utcoffset() is None:
        raise CameraError(
            f"captured_at {when!r} has no UTC offset (write e.g. {when}+00:00): event times "
            "are compared across stores and time zones"
        )
    if not camera:
        raise CameraError("no camera (add a camera column or pass --camera)")
    store = (raw.get("store") or "").strip()
    return ManifestRow(
        line,
        path,
        captured_at,
        check_id(camera, "camera"),
        check_id(store, "store") if store else None,
    )


def frames_from_manifest(
    manifest: Path, default_camera: str | None = None
) -> Iterator[Frame | Skipped]:
    """The manifest's frames in file order; a file that cannot be read is :class:`Skipped`.

    Paths are relative to the manifest's folder, and the path as written is the frame's source
    name, so a replay from another working directory derives the same frame ids.
    """
    # Checked whole and at once, before the first frame is published.
    return _manifest_frames(read_manifest(manifest, default_camera), manifest.parent)


def _manifest_frames(rows: list[ManifestRow], base: Path) -> Iterator[Frame | Skipped]:
    for row in rows:
        path = base / row.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield Skipped(
                f"line {row.line}: {row.path}", f"cannot read {path}: {exc.strerror or exc}"
            )
            continue
        yield Frame(
            data, row.camera_id, row.captured_at, row.path, content_type(path), row.store_id
        )


# -- publishing -------------------------------------------------------------------------------

KeyBy = Literal["store", "camera"]
"""How frames are keyed. ``camera`` (``store/camera``, the default) spreads a store's cameras
over all detectors; each detector hands its partitions' frames over in timestamp order and
reports each camera's progress, and the matcher decides the store's faces in capture order
(docs/pipeline.md, "Capture order"), live and through a replay's backlog. ``store``: a store's
frames go to one partition, so one detector handles them in order; for a camera deployed
before its detectors are upgraded (docs/deploy.md, "Upgrading to camera keys")."""

KEY_BY_VARIABLE: Final = "FACESTREAM_CAMERA_KEY_BY"


def key_by_from_env() -> KeyBy:
    """How frames are keyed, as ``FACESTREAM_CAMERA_KEY_BY`` says (``camera`` unless set):
    what ``facestream camera`` reads, for the tools that publish as cameras (replays)."""
    value = os.environ.get(KEY_BY_VARIABLE, "camera").strip().lower()
    if value not in ("store", "camera"):
        raise CameraError(f"{KEY_BY_VARIABLE} must be 'store' or 'camera', not {value!r}")
    return "store" if value == "store" else "camera"


def publish(
    producer: KafkaProducer,
    topic: str,
    store_id: str,
    items: Iterable[Frame | Skipped],
    *,
    max_frames: int | None = None,
    flush_timeout: float = 30.0,
    key_by: KeyBy = "camera",
) -> PublishReport:
    """Send ``items`` in order to ``topic``, flush, and count what happened. The key is the
    store id, or ``store/camera`` with ``key_by="camera"`` (see :data:`KeyBy`).

    A frame that names its own store (a manifest's ``store`` column) goes to that store;
    ``store_id`` is the store of the others. Stops after ``max_frames`` frames. A failed send
    is counted in the report (and logged), not raised, so that one run reports every failure.
    """
    store_id = check_id(store_id, "store")
    report = PublishReport(topic=topic)
    on_error = report.on_failure(store_id, "a frame")
    videos = VideoEnds()
    if max_frames is not None and max_frames <= 0:
        return report
    for item in items:
        if isinstance(item, Skipped):
            report.skip(store_id, item.source, item.reason)
            continue
        meta = frame_meta(store_id, item)
        store = meta.store_id
        key = frame_key(store, item.camera_id) if key_by == "camera" else store
        future = producer.send(topic, key=key.encode(), value=item.data, headers=meta.to_headers())
        future.add_errback(on_error)
        report.sent += 1
        videos.saw(meta, item.source)
        log.debug(
            "store=%s camera=%s frame=%s: %s (%d bytes) -> %s",
            store,
            item.camera_id,
            meta.frame_id,
            item.source,
            len(item.data),
            topic,
        )
        if max_frames is not None and report.sent >= max_frames:
            break  # before pulling another item: a video is not read further
    for end in videos.ends():
        # Keyed as the camera's frames were, so that it comes after them.
        key = frame_key(end.store_id, end.camera_id) if key_by == "camera" else end.store_id
        producer.send(topic, key=key.encode(), value=b"", headers=end.to_headers()).add_errback(
            on_error
        )
        report.ends += 1
    flush(producer, flush_timeout, "frames")
    log.info(
        "store=%s: %d frames sent to %s, %d failed, %d skipped",
        store_id,
        report.sent,
        topic,
        report.failed,
        report.skipped,
    )
    return report
