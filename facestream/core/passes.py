"""One observation per person pass on a video camera, wherever the detector runs.

A still photo (a manifest replay, a folder) is one sighting per frame: each face is observed
by :func:`~facestream.core.detection.observe_frame`. A camera's video is not: a person in view
for 5 s at 5 frames/s is in 25 frames. For frames marked as video (``FrameMeta.video``),
:class:`VideoPasses` keeps one :class:`CameraPasses` per camera: its
:class:`~facestream.core.regions.DetectionScheduler` decides what to search (nothing where
nothing moved, near the faces already followed first), its
:class:`~facestream.core.tracking.Tracker` follows the faces and encodes a few of each pass's
best frames, and each pass that ends becomes one :class:`FaceObservation`: the mean of its best
encodings, with the frames, encodings and times behind it (the pass fields of the message).

Everything is in event time (the frames' ``captured_at``), so the same frames give the same
observations live, replayed, at the edge or centrally. A pass ends when its face has not been
seen for ``max_gap_seconds`` of the camera's later frames, after ``max_open_seconds`` in view,
or when the camera's video ends (an ``end`` record); a camera whose frames go back in time
(a new video on the same camera id) ends its passes first and starts again.

At most ``max_cameras`` cameras are followed: past it, the camera whose latest frame is the
oldest (event time, so the choice is the same however often a batch is handled) has its open
passes published with the frame that made room, and starts afresh with its next frame.

State and failure: the open passes live in the process. The central detector keeps a copy as
of its last commit and goes back to it when a batch is handled again, so a retried batch gives
the same observations; before a partition moves to another detector, or the detector stops, it
ends the open passes of that partition's cameras and publishes them (services/detector). A
crash loses them: at most ``max_open_seconds`` plus ``max_gap_seconds`` of each camera's
passes (the new owner follows the faces from the next frame on).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Final

from facestream.core.detection import DetectorSettings
from facestream.core.engine import FaceEngine
from facestream.core.images import load_image
from facestream.core.regions import DetectionScheduler, Scan, ScheduleConfig
from facestream.core.tracking import Sighting, TrackConfig, Tracker
from facestream.schemas import FaceObservation, FrameMeta, vector_to_wire

CameraKey = tuple[str, str]
"""``(store_id, camera_id)``."""

JUST_PAST: Final = timedelta(microseconds=1)


def promise(latest: datetime, camera: CameraPasses | None) -> datetime:
    """What a camera's frames up to ``latest`` promise (``CameraProgress.before``, from which
    the matcher orders a store's faces): no later observation of the camera ends before it
    (:attr:`FaceObservation.ends_at`: a pass's last sighting, a still's capture). Its open
    passes will end no earlier than they were last seen, at most ``max_gap_seconds`` ago; with
    none open, the next observation comes from a later frame (a camera's frames have distinct
    times), so the promise is just past the latest frame and that frame's faces need not
    wait."""
    seen = camera.open_seen if camera is not None else None
    return latest + JUST_PAST if seen is None else min(latest, seen)


@dataclass
class PassFrame:
    """What one video frame gave: the faces found, what was searched, the passes it ended."""

    width: int
    height: int
    scan: Scan
    observations: list[FaceObservation]
    """The passes that ended with this frame (of any of the camera's faces), oldest first,
    then those of the cameras it made room for."""
    evicted: tuple[CameraKey, ...] = ()
    """Cameras forgotten to make room for this frame's (``max_cameras``)."""

    @property
    def faces(self) -> int:
        """Faces found in the frame (in what was searched), whether they passed the gate."""
        return len(self.scan.candidates)

    @property
    def rejections(self) -> list[str]:
        """The quality gate's reasons over the faces found (a face can fail for several)."""
        return [reason for face in self.scan.candidates for reason in face.quality.reasons]


@dataclass
class CameraPasses:
    """The passes of one camera: frames in, in event-time order; observations of ended passes
    out."""

    store_id: str
    camera_id: str
    model_version: str
    track: TrackConfig
    scheduler: DetectionScheduler
    tracker: Tracker = field(init=False)
    origin: datetime | None = None
    """Event time 0 of the tracker and scheduler: the camera's first frame (or first since its
    video started again)."""
    last: datetime | None = None
    """The camera's latest frame time."""

    def __post_init__(self) -> None:
        self.tracker = Tracker(self.track)

    def frame(self, engine: FaceEngine, meta: FrameMeta, data: bytes) -> PassFrame:
        """Search one frame, follow its faces, and return the passes that ended with it.
        Raises :class:`~facestream.core.images.ImageError` for bytes that are not an image
        (the camera's state is then as before the frame)."""
        image = load_image(data, max_pixels=engine.config.max_pixels)
        ended = self._restart_if_back(meta.captured_at)
        at = self._at(meta.captured_at)
        scan = self.scheduler.scan(at, image, self.tracker.expected_boxes(at))
        size = (image.shape[1], image.shape[0])
        sightings = self.tracker.update(
            at, scan.candidates, partial(engine.encode, image), size, meta.frame_id
        )
        ended += [self._observation(s) for s in sightings]
        return PassFrame(size[0], size[1], scan, ended)

    def end(self) -> list[FaceObservation]:
        """The camera's video ended: every open pass, as observations."""
        done = [self._observation(s) for s in self.tracker.flush()]
        self.origin = self.last = None
        self.tracker = Tracker(self.track)
        self.scheduler = DetectionScheduler(self.scheduler.engine, self.scheduler.config)
        return done

    @property
    def open_passes(self) -> int:
        return self.tracker.open_tracks

    @property
    def open_seen(self) -> datetime | None:
        """No open pass will be published with a ``last_seen`` before this (None: none open)."""
        seen = self.tracker.open_seen
        return None if seen is None else self._time(seen)

    def _restart_if_back(self, captured_at: datetime) -> list[FaceObservation]:
        """A frame before the camera's latest is another video on this camera (a replay, a
        restarted camera with its clock set back): end what is open, start again."""
        ended = []
        if self.last is not None and captured_at < self.last:
            ended = self.end()
        if self.origin is None:
            self.origin = captured_at
        self.last = captured_at
        return ended

    def _at(self, when: datetime) -> float:
        assert self.origin is not None
        return (when - self.origin).total_seconds()

    def _time(self, at: float) -> datetime:
        assert self.origin is not None
        return self.origin + timedelta(seconds=at)

    def _observation(self, sighting: Sighting) -> FaceObservation:
        best = sighting.representative
        averaged = len(sighting.best)
        encoded = len(sighting.encodings)
        return FaceObservation(
            observation_id=f"{best.frame_id}:{best.face_index}",
            frame_id=best.frame_id,
            face_index=best.face_index,
            store_id=self.store_id,
            camera_id=self.camera_id,
            captured_at=self._time(sighting.first_seen),
            box=best.box,
            size_px=best.quality.size_px,
            sharpness=round(best.quality.sharpness, 2),
            detector=best.detector,
            model_version=self.model_version,
            encoding=vector_to_wire(sighting.encoding),
            last_seen=self._time(max(sighting.last_seen, sighting.first_seen)),
            frames=max(sighting.frames, encoded),
            encoded=encoded,
            averaged=averaged,
        )


class VideoPasses:
    """The video cameras one detector (or one edge box) follows, by ``(store, camera)``."""

    def __init__(
        self,
        engine: FaceEngine,
        *,
        track: TrackConfig | None = None,
        schedule: ScheduleConfig | None = None,
        max_cameras: int = 64,
    ) -> None:
        if max_cameras < 1:
            raise ValueError("max_cameras must be >= 1")
        self.engine = engine
        self.track = track or TrackConfig()
        self.schedule = schedule or ScheduleConfig()
        self.max_cameras = max_cameras
        self.cameras: dict[CameraKey, CameraPasses] = {}

    @classmethod
    def from_settings(cls, engine: FaceEngine, settings: DetectorSettings) -> VideoPasses:
        """Followed as ``FACESTREAM_DETECTOR_*`` says."""
        search = settings.video_search
        return cls(
            engine,
            track=TrackConfig(
                max_gap_seconds=settings.pass_max_gap_seconds,
                max_open_seconds=settings.pass_max_open_seconds,
            ),
            schedule=ScheduleConfig(motion=search, near_tracks=search),
            max_cameras=settings.video_max_cameras,
        )

    def frame(self, meta: FrameMeta, data: bytes) -> PassFrame:
        """One video frame of a camera (:meth:`CameraPasses.frame`), then room made if the
        camera is one too many (after the frame: a frame that fails forgets nobody)."""
        key = (meta.store_id, meta.camera_id)
        seen = self._camera(meta).frame(self.engine, meta, data)
        while len(self.cameras) > self.max_cameras:
            # The camera seen longest ago; a camera's state (its last frame) is what a retried
            # batch goes back to, so the choice repeats on a retry.
            victim = min(
                (k for k in self.cameras if k != key),
                key=lambda k: (self.cameras[k].last or datetime.min.replace(tzinfo=UTC), k),
            )
            seen.observations += self.end_camera(victim)
            seen.evicted += (victim,)
        return seen

    def end(self, meta: FrameMeta) -> list[FaceObservation]:
        """The camera's video ended: its open passes as observations."""
        return self.end_camera((meta.store_id, meta.camera_id))

    def end_camera(self, key: CameraKey) -> list[FaceObservation]:
        """End camera ``key``'s open passes now (its video ended, or its frames are going to
        another detector) and forget it."""
        camera = self.cameras.pop(key, None)
        return camera.end() if camera is not None else []

    def end_all(self) -> list[FaceObservation]:
        """Every camera's open passes (the input ended)."""
        done = [o for camera in self.cameras.values() for o in camera.end()]
        self.cameras.clear()
        return done

    def drop(self, keys: Iterable[CameraKey]) -> int:
        """Forget these cameras with their open passes (their frames went elsewhere); returns
        how many passes were open."""
        lost = 0
        for key in keys:
            camera = self.cameras.pop(key, None)
            lost += camera.open_passes if camera is not None else 0
        return lost

    def snapshot(self) -> dict[CameraKey, CameraPasses]:
        """A copy of every camera's state (the engine shared, not copied)."""
        return copy.deepcopy(self.cameras, {id(self.engine): self.engine})

    def snapshot_of(self, key: CameraKey) -> dict[CameraKey, CameraPasses]:
        """A copy of one camera's state (empty when it is not followed)."""
        camera = self.cameras.get(key)
        if camera is None:
            return {}
        return {key: copy.deepcopy(camera, {id(self.engine): self.engine})}

    def restore(self, saved: dict[CameraKey, CameraPasses], keys: Iterable[CameraKey]) -> None:
        """Put ``keys``' cameras back as they were in ``saved`` (absent there: not followed)."""
        for key in keys:
            if key in saved:
                self.cameras[key] = copy.deepcopy(saved[key], {id(self.engine): self.engine})
            else:
                self.cameras.pop(key, None)

    def _camera(self, meta: FrameMeta) -> CameraPasses:
        key = (meta.store_id, meta.camera_id)
        camera = self.cameras.get(key)
        if camera is None:
            camera = CameraPasses(
                meta.store_id,
                meta.camera_id,
                self.engine.model_version,
                self.track,
                DetectionScheduler(self.engine, self.schedule),
            )
            self.cameras[key] = camera
        return camera
