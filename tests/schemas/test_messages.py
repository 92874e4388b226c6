"""The decode boundary refuses what no camera, detector or matcher can mean (issue 8): clocks
out of bounds, unbounded ids, non-finite numbers, vectors no face has; and ignores frame headers
that are not its own."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from facestream.schemas import (
    CameraProgress,
    CameraProgressV1,
    FaceObservation,
    FrameMeta,
    MatchEvent,
    SchemaError,
    decode,
)
from facestream.schemas.times import TimeBounds, checking_times, reference_time
from facestream.schemas.wire import MAX_NORM, MIN_NORM, vector_to_wire

RECORD_TIME = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
RNG = np.random.default_rng(8)


def face_vector(norm: float = 1.4) -> np.ndarray:
    v = RNG.standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v) * norm


def observation(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "observation_id": "f-1:0",
        "frame_id": "f-1",
        "face_index": 0,
        "store_id": "store-7",
        "camera_id": "door-1",
        "captured_at": "2026-11-29T10:15:02+01:00",
        "box": {"top": 1, "right": 50, "bottom": 50, "left": 1},
        "size_px": 49,
        "sharpness": 80.0,
        "detector": "hog",
        "model_version": "dlib_face_recognition_resnet_model_v1+mirror",
        "encoding": vector_to_wire(face_vector()),
    }
    body.update(changes)
    return body


def match(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "event_id": "e-1",
        "kind": "returning",
        "face_id": "F-1",
        "distance": 0.3,
        "margin": 0.1,
        "store_id": "store-7",
        "matched_store_id": "store-7",
        "camera_id": "door-1",
        "captured_at": "2026-11-29T10:15:02+01:00",
        "frame_id": "f-1",
        "observation_id": "f-1:0",
        "box": {"top": 1, "right": 50, "bottom": 50, "left": 1},
        "model_version": "m",
    }
    body.update(changes)
    return body


def raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()  # json.dumps writes NaN for float("nan"), as some producers do


def refused(model: Any, body: dict[str, Any], reason: str = "invalid") -> str:
    with checking_times(RECORD_TIME), pytest.raises(SchemaError) as caught:
        decode(model, raw(body))
    assert caught.value.reason == reason, caught.value
    return caught.value.message


# -- camera clocks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "captured_at",
    [
        "1970-01-01T00:00:00+01:00",  # a reset clock: a negative epoch in UTC
        "1999-12-31T23:59:59+00:00",
        "2076-11-29T10:15:02+00:00",  # fifty years ahead
        "2026-11-29T10:10:01+00:00",  # just over 10 minutes ahead of the record
        "2026-11-29T10:15:02",  # no offset
    ],
)
def test_event_times_out_of_bounds_are_refused(captured_at: str) -> None:
    refused(FaceObservation, observation(captured_at=captured_at))
    refused(MatchEvent, match(captured_at=captured_at))


def test_event_times_are_bounded_by_the_record_time_not_the_wall_clock() -> None:
    # A month-old record replayed today: its own timestamp is the reference, so the decision
    # is the same on every replay; old times are fine.
    with checking_times(RECORD_TIME):
        decode(FaceObservation, raw(observation(captured_at="2026-11-29T10:09:00+00:00")))
        decode(FaceObservation, raw(observation(captured_at="2003-01-01T00:00:00+00:00")))
    # A record stamped decades ahead does not vouch for itself: now is the reference then.
    ahead = datetime.now(UTC) + timedelta(days=365 * 50)
    with checking_times(ahead), pytest.raises(SchemaError):
        decode(FaceObservation, raw(observation(captured_at=ahead.isoformat())))
    # Outside a runner (no record): now.
    decode(FaceObservation, raw(observation(captured_at=datetime.now(UTC).isoformat())))


def test_the_bounds_are_configurable() -> None:
    tight = TimeBounds(earliest=datetime(2026, 1, 1, tzinfo=UTC), max_ahead=timedelta(seconds=5))
    body = observation(captured_at="2026-11-29T10:00:30+00:00")
    with checking_times(RECORD_TIME, tight), pytest.raises(SchemaError):
        decode(FaceObservation, raw(body))
    with checking_times(RECORD_TIME):
        decode(FaceObservation, raw(body))
    assert reference_time(0) is None and reference_time(-1) is None
    assert reference_time(1_764_410_400_000) == datetime(2025, 11, 29, 10, 0, tzinfo=UTC)


# -- frame headers ------------------------------------------------------------------------------


def headers(**changes: str) -> list[tuple[str, bytes]]:
    meta = FrameMeta(
        frame_id="f-1",
        store_id="store-7",
        camera_id="door-1",
        captured_at=datetime(2026, 11, 29, 10, 15, tzinfo=timezone(timedelta(hours=1))),
    )
    pairs = dict(meta.to_headers())
    pairs.update({k: v.encode() for k, v in changes.items()})
    return list(pairs.items())


def test_unknown_headers_are_ignored_even_when_not_utf8() -> None:
    extra = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    extra.append(("x-vendor", b"\xff\xfe"))
    with checking_times(RECORD_TIME):
        meta = FrameMeta.from_headers(headers() + extra)
    assert meta.frame_id == "f-1"


def test_a_header_of_ours_twice_or_out_of_bounds_is_refused() -> None:
    with checking_times(RECORD_TIME):
        with pytest.raises(SchemaError, match="more than once"):
            FrameMeta.from_headers([*headers(), ("captured_at", b"2026-11-29T10:00:00Z")])
        with pytest.raises(SchemaError, match="captured_at"):
            FrameMeta.from_headers(headers(captured_at="1970-01-01T00:00:00+01:00"))
        for bad in ("x" * 129, "a/b", "{s}", "store 7", ""):
            with pytest.raises(SchemaError):
                FrameMeta.from_headers(headers(store_id=bad))
        with pytest.raises(SchemaError):
            FrameMeta.from_headers(headers(content_type="image/jpeg\n" + "x" * 200))


# -- ids and numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("observation_id", "o" * 10_000),
        ("observation_id", "f-1:0 {tag}"),
        ("detector", "h" * 1000),
        ("model_version", ""),
        ("sharpness", float("nan")),
        ("sharpness", float("inf")),
        ("sharpness", -1.0),
        ("face_index", -1),
    ],
)
def test_observation_fields_are_bounded(field: str, value: Any) -> None:
    refused(FaceObservation, observation(**{field: value}))


@pytest.mark.parametrize(
    "field, value",
    [
        ("distance", float("nan")),
        ("distance", -0.1),
        ("margin", float("inf")),
        ("face_id", "F{1}"),
        ("face_id", "F" * 200),
        ("event_id", "e/1"),
        ("member_id", "m" * 129),
    ],
)
def test_match_fields_are_bounded(field: str, value: Any) -> None:
    refused(MatchEvent, match(**{field: value}))


# -- encodings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vector",
    [
        np.full(128, 1e30, dtype=np.float32),  # matched everything at distance 0.0 (issue 8)
        np.zeros(128, dtype=np.float32),
        face_vector(MIN_NORM * 0.9),
        face_vector(MAX_NORM * 1.1),
    ],
)
def test_encodings_no_face_has_are_refused(vector: np.ndarray) -> None:
    message = refused(FaceObservation, observation(encoding=vector_to_wire(vector)), "bad_encoding")
    assert "norm" in message
    with pytest.raises(ValueError, match="norm"):  # built in code: pydantic's error, same check
        FaceObservation.model_validate(observation(encoding=vector))


def test_encodings_of_real_norms_pass() -> None:
    for norm in (1.24, 1.41, 1.69):
        with checking_times(RECORD_TIME):
            decode(FaceObservation, raw(observation(encoding=vector_to_wire(face_vector(norm)))))
    nan = face_vector()
    nan[3] = np.nan
    body = observation()
    body["encoding"] = body["encoding"][:-8] + "AADAfw=="  # the last float becomes NaN
    refused(FaceObservation, body, "bad_encoding")
    with pytest.raises(SchemaError):
        vector_to_wire(nan)


def test_camera_progress_reads_both_versions_and_refuses_others() -> None:
    """Version 2 promises about when observations end; version 1 (about their start, an
    earlier time) is still read as the promise it is; anything else is an unknown version."""
    before = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    new = CameraProgress(store_id="s1", camera_id="door", before=before)
    assert new.v == 2 and CameraProgress.read(new.to_bytes()) == new
    old = CameraProgressV1(store_id="s1", camera_id="door", before=before).to_bytes()
    assert CameraProgress.read(old) == new
    with pytest.raises(SchemaError) as refused:
        CameraProgress.read(old.replace(b'"v":1', b'"v":3'))
    assert refused.value.reason == "unknown_version"
