"""Response bodies of the HTTP face service, as they appear in the OpenAPI document."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from facestream.core.enrollment import PhotoStatus


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorDetail(_Out):
    # Some errors add fields (``/enroll`` adds ``photos``): the document must allow them.
    model_config = ConfigDict(frozen=True, extra="allow")

    reason: str = Field(description="Stable machine-readable code, e.g. `too_large`.")
    message: str = Field(description="Human-readable explanation.")


class ErrorOut(_Out):
    """Every error response: ``{"error": {"reason": ..., "message": ...}}``. Some errors add
    fields inside ``error`` (``/enroll`` adds ``photos``)."""

    error: ErrorDetail


class BoxOut(_Out):
    """Face box in pixels of the uploaded image; ``right`` and ``bottom`` are exclusive."""

    top: int
    right: int
    bottom: int
    left: int


class QualityOut(_Out):
    passed: bool
    reasons: list[str] = Field(description="Why the face failed the gate: too_small, blurry.")
    size_px: int
    sharpness: float
    score: float


class IdentityOut(_Out):
    id: str
    name: str
    kind: str


FaceReason = Literal["match", "over_threshold", "ambiguous", "empty_gallery", "low_quality"]


class FaceOut(_Out):
    box: BoxOut
    detector: str
    quality: QualityOut
    identity: IdentityOut | None = Field(description="None means unknown.")
    reason: FaceReason = Field(
        description="`match`, or why the face is unknown: over_threshold, ambiguous (too close "
        "to a second identity), empty_gallery, low_quality (not encoded)."
    )
    distance: float | None = Field(description="Distance to the nearest identity.")
    margin: float | None = Field(description="How much farther the next identity is.")


class RecognizeOut(_Out):
    width: int
    height: int
    faces: list[FaceOut]


class VerifyOut(_Out):
    same: bool
    distance: float | None = Field(description="None when a photo has no single clear subject.")
    threshold: float
    reason: str = Field(
        description="match, over_threshold, or no_face_in_a/b, no_single_subject_in_a/b."
    )
    box_a: BoxOut | None = None
    box_b: BoxOut | None = None
    faces: dict[str, int] | None = Field(
        default=None, description="Faces found in the photo that had no single subject."
    )


class PhotoOut(_Out):
    index: int = Field(description="Position of the photo in the request.")
    filename: str
    status: PhotoStatus
    detail: str


class EnrollOut(_Out):
    identity: IdentityOut
    created: bool = Field(description="False when samples were added to an existing identity.")
    enrolled: int = Field(description="Photos enrolled by this request.")
    samples: int = Field(description="Samples the identity now has.")
    persisted: bool = Field(description="Whether the gallery file was rewritten.")
    photos: list[PhotoOut]


class ErasureOut(_Out):
    id: str
    erased: bool
    samples_erased: int
    persisted: bool = Field(description="Whether the gallery file was rewritten without them.")


class IdentityListOut(_Out):
    total: int
    offset: int
    limit: int
    items: list[IdentityOut]


class HealthOut(_Out):
    status: Literal["ok"]
    identities: int
    samples: int


# -- the store dashboard's JSON API (/api/v1) ------------------------------------------------


class StoreOut(_Out):
    store: str
    timezone: str = Field(description="IANA zone the store's days and times are counted in.")
    today: str = Field(description="The current date in the store's time zone, `YYYY-MM-DD`.")


class StoresOut(_Out):
    stores: list[StoreOut]


class VisitOut(_Out):
    """One visit, as the pipeline recognised it; times in the store's time zone."""

    kind: Literal["member", "visitor"]
    member_id: str | None
    start: str = Field(description="First sighting, ISO 8601 with the store's UTC offset.")
    end: str = Field(description="Last sighting so far.")
    events: int
    dwell_seconds: float | None = Field(description="None for a single sighting.")


class StoreDayOut(_Out):
    """The object ``facestream stats --json`` prints, plus the dashboard's extras. Further keys
    that command may print are passed through."""

    model_config = ConfigDict(frozen=True, extra="allow")

    store: str
    date: str = Field(description="The store's local day, `YYYY-MM-DD`.")
    pv: int = Field(description="Visits that started on the day.")
    uv: int = Field(description="Distinct visitors (members and anonymous) of the day.")
    new: int
    returning: int
    members: list[str]
    dwell_seconds_avg: float | None
    dwell_visits: int
    timezone: str
    hourly: list[int] = Field(description="Visits started in each local hour, 0 to 23.")
    recent: list[VisitOut] = Field(description="The day's visits seen last, latest first.")


class ArrivalOut(_Out):
    id: str = Field(description="Stream entry id (also the SSE event id).")
    member_id: str
    camera_id: str
    at: str = Field(description="Event time, ISO 8601 with the store's UTC offset.")
    event_id: str


class ArrivalsOut(_Out):
    arrivals: list[ArrivalOut]
