"""Message contracts of the pipeline, one model per topic. Documented in docs/events.md.

| topic | key | value |
|---|---|---|
| ``frames.v1`` | store id, or ``store/camera`` | the image bytes; :class:`FrameMeta` in headers |
| ``encodings.v1`` | store id | :class:`FaceObservation`, one face each; :class:`CameraProgress` |
| ``matches.v1`` | store id | :class:`MatchEvent`, one decision per face |
| ``members.v1`` (compacted) | member id | :class:`MemberRecord`; a tombstone (null) erases |
| ``identities.v1`` (compacted) | ``store/face_id`` | :class:`IdentityRecord`; a tombstone erases |
| ``member-samples.v1`` (compacted) | member id | :class:`MemberSamples`; a tombstone erases |
| ``<topic>.dlq`` | the source key | :class:`DeadLetter` |

Times are event times (``captured_at``, stamped by the camera) and must carry a UTC offset;
the bounds a camera clock must keep are in :mod:`.times`. Ids are bounded in length and
charset (they end up in Redis key names), numbers are finite, encodings plausible
(:mod:`.wire`).
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Annotated, ClassVar, Final, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from facestream.schemas.times import check_aware, check_event_time
from facestream.schemas.wire import (
    Message,
    SchemaError,
    Vector,
    decode_either,
    vector_from_wire,
)

# Ids travel in keys and Redis key names: keep them printable, short and free of separators
# that mean something there ("/" splits identity keys, "{}" are Redis hash tags).
ID_PATTERN: Final = r"^[A-Za-z0-9._:@-]+$"
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
ObservationId = Annotated[str, StringConstraints(min_length=1, max_length=140, pattern=ID_PATTERN)]
"""``{frame_id}:{face_index}``: an :data:`Id` plus the index."""
Label = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[ -~]+$")]
"""A short printable ASCII name (a detector, a model version, a content type)."""
Finite = Annotated[float, Field(allow_inf_nan=False)]

EventTime = Annotated[datetime, AfterValidator(check_event_time)]
"""The event time of the record being handled (``captured_at``): see :mod:`.times`."""
Timestamp = Annotated[datetime, AfterValidator(check_aware)]
"""Any other time: aware, and not before 2000."""

# uuid5 namespace of facestream: ids derived from it are the same on every replay.
NAMESPACE: Final = uuid.UUID("6f1c2d8e-3b4a-5c6d-8e9f-0a1b2c3d4e5f")


def derived_id(*parts: str) -> str:
    """A deterministic id from its parts (a replay derives the same id)."""
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


class Box(Message):
    """A face box in pixels of the original image; ``right`` and ``bottom`` are exclusive.

    The one box type: the face engine returns it and the messages carry it as is."""

    top: int
    right: int
    bottom: int
    left: int

    @property
    def width(self) -> int:
        """Pixels from ``left`` to ``right``."""
        return self.right - self.left

    @property
    def height(self) -> int:
        """Pixels from ``top`` to ``bottom``."""
        return self.bottom - self.top


class FrameMeta(Message):
    """Metadata of a frame; travels as Kafka headers beside the image bytes.

    ``video`` (optional, added within version 1) marks a frame of a camera's video: the
    detector follows faces across such frames and publishes one observation per person pass
    (:mod:`facestream.core.passes`). ``end`` is a record without an image, sent when the video
    ends, that closes the camera's open passes. A frame without it is a still: its faces are
    observed one by one, as before the field."""

    ADDED_WITHIN_VERSION: ClassVar[frozenset[str]] = frozenset({"video"})
    v: Literal[1] = 1
    frame_id: Id
    store_id: Id
    camera_id: Id
    captured_at: EventTime
    content_type: Label = "image/jpeg"
    video: Literal["frame", "end"] | None = None

    def to_headers(self) -> list[tuple[str, bytes]]:
        return [
            (k, str(v).encode())
            for k, v in self.model_dump(mode="json").items()
            if not (v is None and k in self.ADDED_WITHIN_VERSION)
        ]

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes]] | None) -> FrameMeta:
        """Parse frame headers; a missing or bad header is a :class:`SchemaError`."""
        # Headers other than ours are ignored: tracing (traceparent), a camera SDK's own. The
        # model itself stays extra="forbid" for the JSON it describes. One of ours twice is
        # refused: which value the camera meant is unknown.
        fields: dict[str, str] = {}
        for key, raw in headers or []:
            if key not in cls.model_fields:
                continue
            if key in fields:
                raise SchemaError("invalid", f"header {key} appears more than once")
            try:
                fields[key] = (raw or b"").decode()
            except UnicodeDecodeError as exc:
                raise SchemaError("invalid", f"header {key} is not UTF-8") from exc
        if "v" not in fields:
            raise SchemaError("invalid", "the frame has no 'v' header")
        if fields["v"] != str(cls.VERSION):
            raise SchemaError("unknown_version", f"frame version {fields['v']!r} is not understood")
        try:
            return cls.model_validate({**fields, "v": int(fields["v"])})
        except ValidationError as exc:
            bad = exc.errors()[0]
            where = ".".join(str(p) for p in bad["loc"])
            raise SchemaError("invalid", f"header {where}: {bad['msg']}") from exc


class FaceObservation(Message):
    """One face found in one frame (``encodings.v1``), or one person's pass through a video
    camera's view (the pass fields set).

    A pass (optional fields, added within version 1): ``captured_at`` is when the face came
    into view and ``last_seen`` when it was last seen; ``frames`` the frames it was found in,
    ``encoded`` how many of them were encoded, ``averaged`` how many of those (the best) the
    ``encoding`` is the mean of. ``frame_id``, ``face_index``, ``box``, ``size_px`` and
    ``sharpness`` are those of the pass's best face, so the id stays ``{frame_id}:{face_index}``.
    """

    ADDED_WITHIN_VERSION: ClassVar[frozenset[str]] = frozenset(
        {"last_seen", "frames", "encoded", "averaged"}
    )
    v: Literal[1] = 1
    observation_id: ObservationId
    """``{frame_id}:{face_index}``: unique, and the same on every replay of the frame."""
    frame_id: Id
    face_index: int = Field(ge=0, le=10_000)
    store_id: Id
    camera_id: Id
    captured_at: EventTime
    box: Box
    size_px: int = Field(ge=0)
    sharpness: Finite = Field(ge=0)
    detector: Label
    model_version: Label
    encoding: Vector
    last_seen: EventTime | None = None
    frames: int | None = Field(default=None, ge=1, le=1_000_000)
    encoded: int | None = Field(default=None, ge=1, le=1_000_000)
    averaged: int | None = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _a_whole_pass(self) -> FaceObservation:
        passes = (self.last_seen, self.frames, self.encoded, self.averaged)
        if any(v is not None for v in passes):
            if any(v is None for v in passes):
                raise ValueError("a pass sets last_seen, frames, encoded and averaged together")
            assert self.last_seen is not None and self.frames is not None
            assert self.encoded is not None and self.averaged is not None
            if self.last_seen < self.captured_at:
                raise ValueError("last_seen is before captured_at")
            if not self.averaged <= self.encoded <= self.frames:
                raise ValueError("a pass needs averaged <= encoded <= frames")
        return self

    @property
    def ends_at(self) -> datetime:
        """When the sighting ended: a pass's ``last_seen``, a still's ``captured_at``. The
        matcher decides a store's faces in this order (see :class:`CameraProgress`)."""
        return self.last_seen or self.captured_at

    @property
    def vector(self) -> NDArray[np.float32]:
        return vector_from_wire(self.encoding)


class CameraProgressV1(Message):
    """Version 1 of :class:`CameraProgress` (detectors of 3-4 Dec 2026): no observation of the
    camera published after it has a ``captured_at`` before ``before``, the first frame of the
    camera's earliest open pass. Still read: a pass ends no earlier than it begins, so it is
    an earlier promise than version 2's, which the matcher uses as one; never written."""

    v: Literal[1] = 1
    store_id: Id
    camera_id: Id
    before: EventTime


class CameraProgress(Message):
    """A detector's promise about one camera (``encodings.v1``, beside the observations, keyed
    by the store; the record carries the header :data:`~facestream.schemas.keys.PROGRESS`):
    no observation of this camera published after this record ends before ``before`` (a
    pass's ``last_seen``, a still's ``captured_at``: ``FaceObservation.ends_at``). The matcher
    decides a store's faces in that order once every camera of the store has promised past
    them (docs/pipeline.md, "Capture order").

    ``before`` is the earliest last sighting of the camera's passes still open, or, with none
    open, just past (1 µs) its latest committed frame (a camera's frames have distinct times).
    Only committed frames count, so it holds across a detector's retries and restarts (what is
    replayed starts at the last commit).

    Version 2: version 1 promised about ``captured_at`` (a pass's first frame), which held a
    pass back until every pass begun before it had ended. Read with :meth:`read`, which also
    accepts version 1.
    """

    VERSION: ClassVar[int] = 2
    v: Literal[2] = 2
    store_id: Id
    camera_id: Id
    before: EventTime

    @classmethod
    def read(cls, value: bytes | None) -> CameraProgress:
        """Decode a version 2 record, or a version 1 one (its promise, earlier, as it is).
        Every failure is a :class:`SchemaError`, as with :func:`decode`."""
        got = decode_either(cls, CameraProgressV1, value)
        if not isinstance(got, CameraProgressV1):
            return got
        return cls(store_id=got.store_id, camera_id=got.camera_id, before=got.before)


class MatchEvent(Message):
    """The decision about one face (``matches.v1``): what the CRM and the sink consume.

    ``last_seen`` (optional, added within version 1) is set when the observation was a person's
    pass through a video camera's view: the person was in view from ``captured_at`` to
    ``last_seen`` (the sink counts that span in the visit's dwell)."""

    ADDED_WITHIN_VERSION: ClassVar[frozenset[str]] = frozenset({"last_seen"})
    v: Literal[1] = 1
    event_id: Id
    """Derived from the observation id: a replayed observation gives the same event id."""
    kind: Literal["member", "returning", "new"]
    member_id: Id | None = None
    face_id: Id | None = None
    """The anonymous visitor's FaceId (``returning`` and ``new``)."""
    distance: Finite | None = Field(default=None, ge=0)
    margin: Finite | None = None
    store_id: Id
    matched_store_id: Id | None = None
    """For a returning visitor: the store whose shard knew them (a neighbour, or this store)."""
    camera_id: Id
    captured_at: EventTime
    frame_id: Id
    observation_id: ObservationId
    box: Box
    model_version: Label
    last_seen: EventTime | None = None

    @model_validator(mode="after")
    def _seen_in_order(self) -> MatchEvent:
        if self.last_seen is not None and self.last_seen < self.captured_at:
            raise ValueError("last_seen is before captured_at")
        return self


UNSTATED_MODEL_VERSION: Final = "dlib_face_recognition_resnet_model_v1+mirror"
"""The encoder of a :class:`MemberRecord` or :class:`IdentityRecord` that names none: records
written before ``model_version`` was added to them were all made by this one, the engine's
default then and now (``facestream.core.engine.MODEL_VERSION``)."""


class MemberRecord(Message):
    """An enrolled member with their encodings (``members.v1``, compacted, key = member id).

    ``model_version`` (optional, added within version 1) is the encoder that made the
    encodings; a matcher of another model ignores the record (distances between two models'
    encodings mean nothing). Records without it read as :data:`UNSTATED_MODEL_VERSION`."""

    ADDED_WITHIN_VERSION: ClassVar[frozenset[str]] = frozenset({"model_version"})
    v: Literal[1] = 1
    member_id: Id
    name: str = Field(default="", max_length=200)
    encodings: list[Vector] = Field(min_length=1, max_length=64)
    enrolled_at: Timestamp
    model_version: Label | None = None

    @property
    def model(self) -> str:
        """The encoder of :attr:`encodings`: ``model_version``, or the one records had before
        they named it."""
        return self.model_version or UNSTATED_MODEL_VERSION

    @property
    def vectors(self) -> NDArray[np.float32]:
        return np.stack([vector_from_wire(e) for e in self.encodings])


MAX_MEMBER_LEARNED: Final = 16
"""Most learned encodings one :class:`MemberSamples` may carry (a matcher keeps fewer)."""


class MemberSamples(Message):
    """The samples the matchers learned for an enrolled member from confident sightings
    (``member-samples.v1``, compacted, key = member id). A record is the whole learned set: a
    newer one replaces it. The enrolled encodings stay in :class:`MemberRecord`, written only
    by enrollment, and are never displaced by these; an erasure tombstones both keys.

    ``learned_from[i]`` is the observation ``encodings[i]`` came from; ``model_version`` the
    encoder that made them (a matcher ignores samples of another model)."""

    v: Literal[1] = 1
    member_id: Id
    model_version: Label
    encodings: list[Vector] = Field(min_length=1, max_length=MAX_MEMBER_LEARNED)
    learned_from: list[ObservationId] = Field(min_length=1, max_length=MAX_MEMBER_LEARNED)
    learned_at: Timestamp
    """``captured_at`` of the sighting that gave the latest sample (never the clock: a replay
    writes the same bytes)."""

    @model_validator(mode="after")
    def _samples_line_up(self) -> MemberSamples:
        if len(self.learned_from) != len(self.encodings):
            raise ValueError("learned_from must name one observation per encoding")
        if len(set(self.learned_from)) != len(self.learned_from):
            raise ValueError("an observation gives a member at most one sample")
        return self

    @property
    def vectors(self) -> NDArray[np.float32]:
        """The learned encodings as an ``(n, 128)`` array, in learning order."""
        return np.stack([vector_from_wire(e) for e in self.encodings])


MAX_VISITOR_SAMPLES: Final = 64
"""Most encodings one :class:`IdentityRecord` may carry (a matcher keeps fewer: its setting)."""


class IdentityRecordV1(Message):
    """Version 1 of :class:`IdentityRecord`: the minting encoding only. Still read (such records
    stay in the compacted topic until their FaceId is erased or learns), never written."""

    v: Literal[1] = 1
    face_id: Id
    store_id: Id
    encoding: Vector
    first_seen: Timestamp
    observation_id: ObservationId


class IdentityRecord(Message):
    """An anonymous visitor's FaceId and face samples (``identities.v1``, compacted, key =
    ``store/face_id``). A record is the visitor's whole state: a newer one replaces it.

    Version 2: ``encodings`` holds the minting encoding first, then the ones learned from later
    confident sightings; ``learned_from[i]`` is the observation ``encodings[i]`` came from.
    Read with :meth:`read`, which also accepts version 1 (one encoding).

    ``last_seen`` (optional, added within version 2) is when the visitor was last sighted, as
    far as the changelog knows: the owning matcher retires a visitor unseen for its retention
    period, and a shard rebuilt from this topic must know who that is. Records without it (from
    matchers before it) read as last seen at ``first_seen``: see :attr:`seen`.

    ``model_version`` (optional, added within version 2 after ``last_seen``) is the encoder that
    made the samples: a matcher of another model does not load the visitor. Records without it
    read as :data:`UNSTATED_MODEL_VERSION` (:attr:`model`)."""

    VERSION: ClassVar[int] = 2
    ADDED_WITHIN_VERSION: ClassVar[frozenset[str]] = frozenset({"last_seen", "model_version"})
    v: Literal[2] = 2
    face_id: Id
    store_id: Id
    first_seen: Timestamp
    """``captured_at`` of the minting observation."""
    observation_id: ObservationId
    """The observation that minted the FaceId (also ``learned_from[0]``)."""
    encodings: list[Vector] = Field(min_length=1, max_length=MAX_VISITOR_SAMPLES)
    learned_from: list[ObservationId] = Field(min_length=1, max_length=MAX_VISITOR_SAMPLES)
    last_seen: Timestamp | None = None
    """``captured_at`` of a recent sighting (the latest one that moved it): never before
    ``first_seen``. Refreshed in coarse steps, so it may lag the last sighting by up to one."""
    model_version: Label | None = None
    """The encoder of :attr:`encodings` (optional, added within version 2; see :attr:`model`)."""

    @property
    def model(self) -> str:
        """The encoder of the samples: ``model_version``, or the one records had before they
        named it (version 1 records, and version 2 ones written before the field)."""
        return self.model_version or UNSTATED_MODEL_VERSION

    @property
    def seen(self) -> datetime:
        """When the visitor was last seen: ``last_seen``, or ``first_seen`` without it."""
        return self.last_seen or self.first_seen

    @model_validator(mode="after")
    def _samples_line_up(self) -> IdentityRecord:
        if self.last_seen is not None and self.last_seen < self.first_seen:
            raise ValueError("last_seen must not be before first_seen")
        if len(self.learned_from) != len(self.encodings):
            raise ValueError("learned_from must name one observation per encoding")
        if self.learned_from[0] != self.observation_id:
            raise ValueError("the first encoding must be the minting observation's")
        if len(set(self.learned_from)) != len(self.learned_from):
            raise ValueError("an observation gives a visitor at most one sample")
        return self

    @property
    def vectors(self) -> NDArray[np.float32]:
        """The encodings as an ``(n, 128)`` array, the minting one first."""
        return np.stack([vector_from_wire(e) for e in self.encodings])

    @classmethod
    def minted(
        cls,
        *,
        face_id: str,
        store_id: str,
        encoding: str,
        first_seen: datetime,
        observation_id: str,
        model_version: str | None = None,
    ) -> IdentityRecord:
        """The record of a FaceId just minted from one observation (one sample)."""
        return cls(
            face_id=face_id,
            store_id=store_id,
            first_seen=first_seen,
            observation_id=observation_id,
            encodings=[encoding],
            learned_from=[observation_id],
            last_seen=first_seen,
            model_version=model_version,
        )

    @classmethod
    def read(cls, value: bytes | None) -> IdentityRecord:
        """Decode a record of version 2, or of version 1 (upgraded: its one encoding as the only
        sample). Every failure is a :class:`SchemaError`, as with :func:`decode`."""
        old = decode_either(cls, IdentityRecordV1, value)
        if not isinstance(old, IdentityRecordV1):
            return old
        return cls.minted(
            face_id=old.face_id,
            store_id=old.store_id,
            encoding=old.encoding,
            first_seen=old.first_seen,
            observation_id=old.observation_id,
        )


class DeadLetter(Message):
    """A message a stage could not handle, with why and where it came from (``<topic>.dlq``)."""

    v: Literal[1] = 1
    stage: str
    reason: str
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_key: str | None = None
    source_headers: dict[str, str] = Field(default_factory=dict)
    payload_b64: str = ""
    """The original value (base64), cut at :data:`DLQ_PAYLOAD_LIMIT` bytes; empty unless the
    stage keeps payloads (``FACESTREAM_DLQ_KEEP_PAYLOAD``): it may be a face image or an
    encoding. A withheld value is cut to nothing (``payload_truncated``), and ``error`` ends
    with its size and SHA-256."""
    payload_truncated: bool = False
    failed_at: Timestamp


DLQ_PAYLOAD_LIMIT: Final = 1024 * 1024


def payload_field(value: bytes | None) -> tuple[str, bool]:
    """The base64 payload for a :class:`DeadLetter` and whether it was cut."""
    raw = value or b""
    return base64.b64encode(raw[:DLQ_PAYLOAD_LIMIT]).decode(), len(raw) > DLQ_PAYLOAD_LIMIT
