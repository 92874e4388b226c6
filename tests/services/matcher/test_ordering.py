"""A store's faces decided in capture order (services/matcher/ordering.py): the same decisions
for any interleaving of its cameras' records, on real LFW encodings and the real broker; what
holds a face back, what lets it go, and what a restarted matcher reads back."""

from __future__ import annotations

import itertools
import random
import time
from datetime import timedelta
from typing import Any

import numpy as np

from facestream.core.engine import Encoding
from facestream.runtime.runner import Record, make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import CameraProgress, FaceObservation, MatchEvent, decode
from facestream.schemas.keys import PROGRESS, partition_for
from facestream.services.matcher.ordering import CaptureOrder
from facestream.services.matcher.worker import MatcherHandler
from tests.kafka_fixtures import PARTITIONS, read_topic
from tests.services.matcher.test_matcher import (
    T0,
    _redis_keys,
    clean_redis,
    faces,
    make_handler,
    observation,
)

__all__ = ["_redis_keys", "faces", "make_handler"]  # fixtures, used by name

STORE = "s1"


def seen(camera: str, obs_id: str, vector: Encoding, seconds: float) -> FaceObservation:
    base = observation(STORE, obs_id, vector)
    return base.model_copy(
        update={"camera_id": camera, "captured_at": T0 + timedelta(seconds=seconds)}
    )


def promise(camera: str, seconds: float) -> CameraProgress:
    return CameraProgress(store_id=STORE, camera_id=camera, before=T0 + timedelta(seconds=seconds))


def as_records(pipeline: PipelineSettings, items: list[Any], earlier: int = 0) -> list[Record]:
    """Faces and promises as the matcher reads them from the store's partition, in this order,
    written now, but for the first ``earlier``, written a minute ago (the store is not new)."""
    part = partition_for(STORE, PARTITIONS)
    now = int(time.time() * 1000)
    out = []
    for offset, item in enumerate(items):
        headers = [PROGRESS] if isinstance(item, CameraProgress) else None
        out.append(
            Record(
                pipeline.topics.encodings,
                part,
                offset,
                STORE.encode(),
                item.to_bytes(),
                headers,
                now - 60_000 if offset < earlier else now,
            )
        )
    return out


def interleave(cameras: list[list[Any]], rng: random.Random) -> list[Any]:
    """One arrival order: each camera's records in their own order, the cameras mixed."""
    queues = [list(c) for c in cameras]
    out = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        out.append(queue.pop(0))
    return out


def decisions(handler: MatcherHandler, records: list[Record]) -> dict[str, tuple[str, str]]:
    """Observation id -> (kind, face id or member id) of every match event the records gave."""
    out: dict[str, tuple[str, str]] = {}
    for rec in records:
        for o in handler.handle(rec):
            if o.kind == "match" and o.value is not None:
                event = decode(MatchEvent, o.value)
                out[event.observation_id] = (event.kind, event.face_id or event.member_id or "")
    for o in handler.due():
        if o.kind == "match" and o.value is not None:
            late = decode(MatchEvent, o.value)
            out[late.observation_id] = (late.kind, late.face_id or late.member_id or "")
    return out


def two_cameras(faces: dict[str, list[Encoding]]) -> list[list[Any]]:
    """A store's door and aisle cameras, each as its detector publishes them (faces, then a
    promise after the commit), both running already (a first promise each). Amber is seen at
    the aisle at 5 s, at the door at 20 s; Carl at
    the door at 8 s and the aisle at 12 s. Who is new depends on which face is decided first."""
    amber, carl = faces["Amber_Tamblyn"], faces["Carl_Reiner"]
    door = [
        promise("door", 0),
        seen("door", "d8:0", carl[0], 8),
        promise("door", 9),
        seen("door", "d20:0", amber[0], 20),
        promise("door", 21),
        promise("door", 25),
    ]
    aisle = [
        promise("aisle", 0),
        seen("aisle", "a5:0", amber[1], 5),
        promise("aisle", 6),
        seen("aisle", "a12:0", carl[1], 12),
        promise("aisle", 13),
        promise("aisle", 25),
    ]
    return [door, aisle]


def test_any_interleaving_of_a_stores_cameras_is_decided_alike(
    pipeline: PipelineSettings, faces: dict[str, list[Encoding]], make_handler: Any
) -> None:
    door, aisle = two_cameras(faces)
    # Both cameras known (promises a minute ago and now: the store is not new); then any order.
    start = [promise("door", -60), promise("aisle", -60), door[0], aisle[0]]
    cameras = [door[1:], aisle[1:]]
    rng = random.Random(3)
    orders = [cameras[0] + cameras[1], cameras[1] + cameras[0]]
    orders += [interleave(cameras, rng) for _ in range(3)]
    orders = [start + o for o in orders]
    results = []
    for items in orders:
        handler = make_handler(member_scales="lazy")
        results.append(decisions(handler, as_records(pipeline, items, earlier=2)))
        clean_redis(pipeline)
    assert all(r == results[0] for r in results), results
    # In capture order: Amber first at the aisle (5 s), Carl at the door (8 s).
    first = results[0]
    assert first["a5:0"][0] == "new" and first["d20:0"] == ("returning", first["a5:0"][1])
    assert first["d8:0"][0] == "new" and first["a12:0"] == ("returning", first["d8:0"][1])

    # Decided as they arrive, the door's camera first: Amber's FaceId is minted at the door.
    arrival = make_handler(member_scales="lazy", order="arrival")
    door_first = decisions(arrival, as_records(pipeline, orders[0], earlier=2))
    assert door_first["d20:0"][0] == "new" and door_first["a5:0"][0] == "returning"
    assert door_first != first


def test_what_holds_a_face_back_and_what_lets_it_go() -> None:
    """On the order alone (no broker): a face waits for every camera of its store that reports
    progress, however far behind (a backlog); a camera silent for wait_seconds stops holding
    it, silence measured by the records' timestamps, and by the wall clock only once the
    matcher has read everything; a face from a camera without progress, or from before the
    promises, goes at once."""
    now = [1_000_000.0]  # the wall clock, and the records' timestamps (when written)
    order = CaptureOrder(wait_seconds=10.0, clock=lambda: now[0])
    vector = np.random.default_rng(1).normal(size=128).astype(np.float32)
    vector *= np.float32(1.4 / np.linalg.norm(vector))

    def face(camera: str, name: str, at: float, offset: int) -> list[str]:
        obs = seen(camera, name, vector, at)
        rec = Record("e", 0, offset, STORE.encode(), b"", timestamp=int(now[0] * 1000))
        return [h.observation_id for h in order.face(rec, obs)]

    def hear(camera: str, at: float) -> list[str]:
        rec = Record("e", 0, 0, STORE.encode(), b"", [PROGRESS], int(now[0] * 1000))
        return [h.observation_id for h in order.progress(rec, promise(camera, at))]

    def due(idle: bool = True) -> list[str]:
        return [h.observation_id for h in order.due(idle)]

    # A store first heard of through a camera's progress (a detector greets each camera
    # before its first face) holds its faces for wait_seconds, promises or not: its other
    # cameras are not known yet, and the first faces may come from any of them.
    assert hear("door", 1) == []
    assert face("door", "x:0", 1, 0) == []
    assert hear("door", 2) == [] and hear("aisle", 2) == []
    now[0] += 10.1
    assert hear("door", 2) == ["x:0"] and hear("aisle", 2) == []
    assert face("door", "b:0", 5, 1) == [] and face("aisle", "a:0", 4, 2) == []
    assert order.held_offsets() == {0: 1}
    assert hear("door", 10) == []  # the aisle has not promised past 4 s
    assert hear("aisle", 6) == ["a:0", "b:0"]  # both cameras past 5 s: in capture order
    assert order.held_offsets() == {}

    # A camera far behind that still reports (its detector has a backlog) holds the others.
    assert face("door", "c:0", 100, 3) == []
    assert hear("door", 200) == []
    now[0] += 5
    assert hear("aisle", 50) == []
    now[0] += 5
    assert due() == []
    assert hear("aisle", 150) == ["c:0"]

    # Late: the door had promised 200 s; a face of 140 s from it is decided at once.
    assert face("door", "late:0", 140, 4) == ["late:0"]

    # A camera silent for wait_seconds no longer holds the others, in order.
    assert face("door", "e:0", 210, 6) == [] and face("aisle", "d:0", 205, 5) == []
    now[0] += 5
    assert hear("door", 220) == []  # the aisle (150 s) still holds both
    now[0] += 4.9
    assert due() == []  # the aisle reported 9.9 s ago
    now[0] += 0.6
    # Not while records are being read: the aisle's progress may be in the backlog. By the
    # records' own time (the door's, 5 s ago), the aisle is not silent.
    assert due(idle=False) == []
    assert due() == ["d:0", "e:0"]  # everything read: by the wall clock, it is

    # A snapshot goes back to what was held; a partition forgotten takes its stores along.
    assert face("door", "f:0", 230, 7) == []
    saved = order.snapshot()
    assert hear("door", 240) == ["f:0"]
    order.restore(saved)
    assert [h.observation_id for h in order.held()] == ["f:0"]
    order.forget([0], saved)
    assert order.held() == [] and saved == {} and order.needs_load(0)

    # A store first heard of through a face has no camera that reports progress (an old
    # edge box): its faces go as they come.
    assert face("door", "g:0", 300, 8) == ["g:0"]
    assert face("door", "h:0", 290, 9) == ["h:0"]


def test_a_restarted_matcher_reads_the_promises_back_and_holds_the_same_faces(
    pipeline: PipelineSettings, faces: dict[str, list[Encoding]], make_handler: Any
) -> None:
    """The promises before the committed offset are not handled again after a restart: the
    matcher reads them back from the partition, or it would decide the held faces as they
    arrive. Here the promises are on the topic, and the matcher starts at the faces."""
    door, aisle = two_cameras(faces)
    # Read back, not handled: from a minute ago (the store is not new), and just now.
    promises = [promise("door", -60), promise("aisle", -60), door[0], aisle[0]]
    rest = [door[1], aisle[1], aisle[2], door[2], door[3], door[4], aisle[3], aisle[4]]
    rest += [door[5], aisle[5]]
    part = partition_for(STORE, PARTITIONS)
    producer = make_producer(pipeline)
    now = int(time.time() * 1000)
    for i, p in enumerate(promises):
        producer.send(
            pipeline.topics.encodings,
            p.to_bytes(),
            STORE.encode(),
            [PROGRESS],
            part,
            timestamp_ms=now - 60_000 if i < 2 else now,
        ).get(timeout=20)
    producer.close(timeout=10)
    whole = make_handler(member_scales="lazy")
    expected = decisions(whole, as_records(pipeline, [*promises, *rest], earlier=2))
    clean_redis(pipeline)

    restarted = make_handler(member_scales="lazy")
    # The promises' real offsets on the partition: the faces come after them.
    start = len([r for r in read_topic(pipeline, pipeline.topics.encodings) if r.partition == part])
    records = [
        Record(r.topic, r.partition, start + i, r.key, r.value, r.headers, r.timestamp)
        for i, r in enumerate(as_records(pipeline, rest))
    ]
    first = restarted.handle(records[0])  # the door's face at 8 s: held, not decided
    assert first == [] and [h.observation_id for h in restarted.order.held()] == ["d8:0"]
    got = decisions(restarted, records[1:])
    assert got == expected
    # Only the faces were decided: no pair of them is missing or decided twice.
    assert sorted(got) == sorted(
        o.observation_id for o in itertools.chain(door, aisle) if isinstance(o, FaceObservation)
    )
