"""Bad and hostile input through the running pipeline (issue 8, item 2).

One pipeline (detector, matcher and sink processes on the real Kafka and Redis, topics of their
own) takes every kind of malformed input below on one store's partition, each followed by a
good message. Afterwards: every bad record is dead-lettered with its expected reason or handled
as designed, every good one was processed, no other record was dead-lettered, and no worker
died. HTTP uploads go to the face API (in process, real engine). docs/reliability.md has the
table of kinds and outcomes; keep it in step with :data:`FRAME_CASES` and the others.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from kafka import KafkaProducer
from PIL import Image

from facestream.core.engine import MODEL_VERSION, FaceEngine
from facestream.core.gallery import Gallery
from facestream.devstack import stack
from facestream.devstack.workers import spawn_worker, stop_workers
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import (
    Box,
    DeadLetter,
    FaceObservation,
    FrameMeta,
    MatchEvent,
    MemberRecord,
    decode,
    derived_id,
)
from facestream.schemas.keys import identity_key, partition_for
from facestream.services.api.app import create_app
from facestream.services.api.settings import ApiSettings
from tests.kafka_fixtures import PARTITIONS, read_topic

STORE = "store-bad"
"""Every input is keyed by this store: one partition, handled in order."""
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
HOSTILE = np.full(128, 1e30, dtype=np.float32)
WAIT = 240.0
"""Seconds the whole pipeline gets to handle everything (it takes well under a minute)."""

Headers = list[tuple[str, bytes]]


# -- what was sent, and what should come of it -----------------------------------------------


@dataclass
class Sent:
    kind: str
    topic: str
    expect: str
    """A dead-letter reason, or ``ok`` (handled by design: see ``check``)."""
    partition: int = -1
    offset: int = -1
    check: Callable[[Outcome], bool] | None = None


@dataclass
class Outcome:
    """What the pipeline did: read from its topics and Redis once everything is handled."""

    matches: list[MatchEvent]
    letters: dict[tuple[str, int, int], DeadLetter]
    redis: redis.Redis
    prefix: str

    def frames_decided(self) -> set[str]:
        return {m.frame_id for m in self.matches}

    def applied(self, event_id: str) -> bool:
        # The store's recent event ids (the sink's bounded dedup window; ours stays under it).
        return self.redis.zscore(f"{self.prefix}:{{{STORE}}}:recent", event_id) is not None


@dataclass
class Feed:
    """Sends records and remembers where each landed."""

    settings: PipelineSettings
    producer: KafkaProducer
    sent: list[Sent] = field(default_factory=list)
    good_frames: list[str] = field(default_factory=list)
    good_events: list[str] = field(default_factory=list)
    good_observations: list[str] = field(default_factory=list)
    ours: set[tuple[int, int]] = field(default_factory=set)
    """Where this test wrote to matches.v1 (the rest is the matcher's)."""

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = STORE.encode(),
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> tuple[int, int]:
        meta = self.producer.send(
            topic, value=value, key=key, headers=headers, partition=partition
        ).get(timeout=20)
        if topic == self.settings.topics.matches:
            self.ours.add((meta.partition, meta.offset))
        return meta.partition, meta.offset

    def bad(self, sent: Sent, value: bytes | None, **options: Any) -> None:
        sent.partition, sent.offset = self.send(sent.topic, value, **options)
        self.sent.append(sent)


# -- inputs ------------------------------------------------------------------------------------


def frame_headers(frame_id: str, **changes: str) -> Headers:
    meta = FrameMeta(frame_id=frame_id, store_id=STORE, camera_id="door-1", captured_at=NOW)
    pairs = dict(meta.to_headers())
    pairs.update({k: v.encode() for k, v in changes.items()})
    return list(pairs.items())


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header announcing ``width`` x ``height`` pixels, with hardly any data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def wide_grey_png(photo: Path) -> bytes:
    grey = np.asarray(Image.open(photo).convert("L"), dtype=np.uint16) * 257
    return encode(Image.fromarray(grey), "PNG")


def mpo(photo: Path) -> bytes:
    first = Image.open(photo)
    return encode(first, "MPO", save_all=True, append_images=[first.resize((64, 64))])


def observation(obs_id: str, vector: Any, **changes: Any) -> dict[str, Any]:
    body = FaceObservation(
        observation_id=f"{obs_id}:0",
        frame_id=obs_id,
        face_index=0,
        store_id=STORE,
        camera_id="door-1",
        captured_at=NOW,
        box=Box(top=10, right=110, bottom=110, left=10),
        size_px=100,
        sharpness=60.0,
        detector="hog",
        model_version=MODEL_VERSION,
        encoding=vector,
    ).model_dump(mode="json")
    body.update(changes)
    return body


def match(name: str, **changes: Any) -> dict[str, Any]:
    event_id = name
    body = MatchEvent(
        event_id=event_id,
        kind="new",
        face_id=derived_id("bad-input", event_id),
        store_id=STORE,
        camera_id="door-1",
        captured_at=NOW,
        frame_id=event_id,
        observation_id=f"{event_id}:0",
        box=Box(top=10, right=110, bottom=110, left=10),
        model_version=MODEL_VERSION,
    ).model_dump(mode="json")
    body.update(changes)
    return body


def js(body: Any) -> bytes:
    return json.dumps(body).encode()  # writes NaN for float("nan"), as some producers do


def wire_of(vector: np.ndarray) -> str:
    """The wire form without its checks: how a hostile producer writes a vector."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


# -- the running pipeline ----------------------------------------------------------------------


@dataclass
class Pipeline:
    settings: PipelineSettings
    workers: list[tuple[str, subprocess.Popen[bytes]]]
    logs: Path


@pytest.fixture(scope="module")
def running(
    live_stack: PipelineSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    tag = f"t{uuid.uuid4().hex[:10]}"
    stack.ensure_topics(PARTITIONS, prefix=f"{tag}.")
    settings = live_stack.model_copy(
        update={"topic_prefix": f"{tag}.", "group_prefix": tag, "redis_prefix": tag}
    )
    logs = tmp_path_factory.mktemp("bad-input")
    workers = []
    for stage in ("detector", "matcher", "sink"):
        out = (logs / f"{stage}.log").open("wb")
        workers.append((stage, spawn_worker(stage, settings, stdout=out, stderr=out)))
    try:
        yield Pipeline(settings, workers, logs)
    finally:
        stop_workers(workers)


def photos(lfw: Path, n: int, engine: FaceEngine | None = None) -> list[Path]:
    """First photos of ``n`` people; with ``engine``, only those with a face the detector keeps
    (on a few LFW photos HOG finds none: a witness frame must give a match event)."""
    found = []
    for person in sorted(p for p in lfw.iterdir() if p.is_dir()):
        photo = sorted(person.glob("*.jpg"))[0]
        if engine is None or any(
            f.encoding is not None and f.quality.passed for f in engine.faces_in(photo)
        ):
            found.append(photo)
        if len(found) == n:
            return found
    raise AssertionError(f"fewer than {n} usable photos in {lfw}")


@pytest.mark.timeout(420)
def test_bad_input_is_dead_lettered_or_handled_and_nothing_good_is_lost(
    running: Pipeline, lfw: Path, engine: FaceEngine
) -> None:
    settings, topics = running.settings, running.settings.topics
    faces = photos(lfw, 40, engine)
    vectors = []
    for photo in faces[20:32]:
        found = [f.encoding for f in engine.faces_in(photo) if f.encoding is not None]
        vectors.append(found[0])
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    feed = Feed(settings, producer)
    witness = iter(range(1000))

    def good_frame(photo: Path | None = None, data: bytes | None = None, **extra: Any) -> str:
        n = next(witness)
        frame_id = f"good-frame-{n}"
        headers = frame_headers(frame_id) + extra.get("more_headers", [])
        feed.send(topics.frames, data or (photo or faces[n % 20]).read_bytes(), headers=headers)
        feed.good_frames.append(frame_id)
        return frame_id

    def good_observation() -> None:
        n = next(witness)
        obs_id = f"good-obs-{n}"
        feed.send(topics.encodings, js(observation(obs_id, vectors[n % len(vectors)])))
        feed.good_observations.append(obs_id)

    def good_event() -> None:
        event_id = f"good-event-{next(witness)}"
        feed.send(topics.matches, js(match(event_id)))
        feed.good_events.append(event_id)

    try:
        # Changelog records first, so the matcher has read them before the observations.
        changelog: list[tuple[str, bytes, bytes, str]] = [
            ("member record not JSON", b"M-junk", b"{not json", topics.members),
            (
                "member record with a vector of 1e30s (would match everyone)",
                b"M-evil",
                js(
                    {
                        "v": 1,
                        "member_id": "M-evil",
                        "name": "",
                        "encodings": [wire_of(HOSTILE)],
                        "enrolled_at": NOW.isoformat(),
                    }
                ),
                topics.members,
            ),
            (
                "member record whose key is not its member id",
                b"M-other",
                MemberRecord(member_id="M-1", encodings=[vectors[0]], enrolled_at=NOW).to_bytes(),
                topics.members,
            ),
            ("member record with a non-UTF-8 key", b"\xff\xfe", b"{}", topics.members),
            (
                "identity record with a vector of 1e30s",
                identity_key(STORE, "F-evil").encode(),
                js(
                    {
                        "v": 2,
                        "face_id": "F-evil",
                        "store_id": STORE,
                        "first_seen": NOW.isoformat(),
                        "observation_id": "x:0",
                        "encodings": [wire_of(HOSTILE)],
                        "learned_from": ["x:0"],
                    }
                ),
                topics.identities,
            ),
            (
                "identity record of unknown version",
                identity_key(STORE, "F-v9").encode(),
                js({"v": 9}),
                topics.identities,
            ),
            ("identity record with no store/face_id key", b"nokey", b"{}", topics.identities),
        ]
        for kind, key, payload, topic in changelog:
            part = None if topic == topics.members else 0
            if topic == topics.identities and b"/" in key:
                part = partition_for(STORE, PARTITIONS)  # where the store's shard is read
            feed.send(topic, payload, key=key, partition=part)
            feed.sent.append(
                Sent(
                    kind,
                    topic,
                    "ok",
                    check=lambda o: all(
                        m.member_id != "M-evil" and m.face_id not in ("F-evil", "F-v9")
                        for m in o.matches
                    ),
                )
            )
        good_observation()

        # -- frames.v1 ----------------------------------------------------------------------
        jpeg = faces[0].read_bytes()
        frame_cases: list[tuple[str, bytes | None, dict[str, Any], str]] = [
            ("frame: not an image", b"hello, detector", {}, "image_not_an_image"),
            ("frame: empty value", b"", {}, "image_empty"),
            ("frame: null value", None, {}, "image_empty"),
            ("frame: truncated JPEG", jpeg[: len(jpeg) // 2], {}, "image_truncated"),
            (
                "frame: GIF",
                encode(Image.new("RGB", (64, 64)), "GIF"),
                {},
                "image_unsupported_format",
            ),
            (
                "frame: PNG header claiming 100k x 100k pixels",
                png_claiming(100_000, 100_000),
                {},
                "image_too_large",
            ),
            ("frame: no v header", jpeg, {"drop": "v"}, "invalid"),
            ("frame: unknown version 9", jpeg, {"v": "9"}, "unknown_version"),
            (
                "frame: captured 1970-01-01 (reset clock)",
                jpeg,
                {"captured_at": "1970-01-01T00:00:00+01:00"},
                "invalid",
            ),
            (
                "frame: captured 50 years ahead",
                jpeg,
                {"captured_at": (NOW + timedelta(days=365 * 50)).isoformat()},
                "invalid",
            ),
            (
                "frame: captured 1 hour ahead",
                jpeg,
                {"captured_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
                "invalid",
            ),
            (
                "frame: time without UTC offset",
                jpeg,
                {"captured_at": "2026-11-29T10:00:00"},
                "invalid",
            ),
            ("frame: time that is not a time", jpeg, {"captured_at": "yesterday"}, "invalid"),
            ("frame: store id with / and {}", jpeg, {"store_id": "a/b{c}"}, "invalid"),
            ("frame: 10,000-character frame id", jpeg, {"frame_id": "f" * 10_000}, "invalid"),
            ("frame: non-UTF-8 header of ours", jpeg, {"camera_id": b"\xff\xfe"}, "invalid"),
            ("frame: captured_at header twice", jpeg, {"twice": "captured_at"}, "invalid"),
            ("frame: key is not the store id", jpeg, {"key": b"store-other"}, "key_mismatch"),
            ("frame: video header of no known value", jpeg, {"add": ("video", b"film")}, "invalid"),
            (
                "frame: video frame that is not an image",
                b"hello, detector",
                {"add": ("video", b"frame")},
                "image_not_an_image",
            ),
        ]
        for kind, value, options, reason in frame_cases:
            frame_id = f"bad-frame-{len(feed.sent)}"
            headers = frame_headers(frame_id)
            key = options.get("key", STORE.encode())
            if "drop" in options:
                headers = [(k, v) for k, v in headers if k != options["drop"]]
            if "twice" in options:
                headers.append((options["twice"], NOW.isoformat().encode()))
            if "add" in options:
                headers.append(options["add"])
            for name, text in options.items():
                if name in FrameMeta.model_fields:
                    raw = text if isinstance(text, bytes) else text.encode()
                    headers = [(k, raw if k == name else v) for k, v in headers]
            feed.bad(Sent(kind, topics.frames, reason), value, key=key, headers=headers)
            good_frame()

        # Handled by design: processed like any good frame.
        traced = good_frame(
            more_headers=[
                ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                ("x-vendor-binary", b"\xff\x00\xfe"),
            ]
        )
        wide = good_frame(data=wide_grey_png(faces[30]))
        phone = good_frame(data=mpo(faces[31]))
        feed.sent += [
            Sent(
                "frame: extra headers (traceparent, a binary vendor header)",
                topics.frames,
                "ok",
                check=lambda o: traced in o.frames_decided(),
            ),
            Sent(
                "frame: 16-bit greyscale PNG",
                topics.frames,
                "ok",
                check=lambda o: wide in o.frames_decided(),
            ),
            Sent(
                "frame: MPO phone photo (JPEG + second frame)",
                topics.frames,
                "ok",
                check=lambda o: phone in o.frames_decided(),
            ),
        ]
        again = good_frame(faces[33])
        feed.send(topics.frames, faces[33].read_bytes(), headers=frame_headers(again))
        feed.sent.append(
            Sent(
                "frame: the same frame sent twice",
                topics.frames,
                "ok",
                check=lambda o: (
                    len({m.event_id for m in o.matches if m.frame_id == again}) == 1
                    and o.applied(next(m.event_id for m in o.matches if m.frame_id == again))
                ),
            )
        )

        # -- encodings.v1 -------------------------------------------------------------------
        v = vectors[1]
        nan_vector = np.array(v, copy=True)
        nan_vector[5] = np.nan
        observation_cases: list[tuple[str, bytes | None, bytes | None, str]] = [
            ("observation: not JSON", b"\x00\x01binary", None, "not_json"),
            ("observation: a JSON array", b"[1, 2, 3]", None, "invalid"),
            ("observation: null value", None, None, "invalid"),
            (
                "observation: unknown version 2",
                js(observation("o", v, v=2)),
                None,
                "unknown_version",
            ),
            (
                "observation: vector of 1e30s",
                js(observation("o", v, encoding=wire_of(HOSTILE))),
                None,
                "bad_encoding",
            ),
            (
                "observation: vector of zeros",
                js(observation("o", v, encoding=wire_of(np.zeros(128)))),
                None,
                "bad_encoding",
            ),
            (
                "observation: NaN in the vector",
                js(observation("o", v, encoding=wire_of(nan_vector))),
                None,
                "bad_encoding",
            ),
            (
                "observation: 127-value vector",
                js(observation("o", v, encoding=wire_of(v[:127]))),
                None,
                "bad_encoding",
            ),
            (
                "observation: vector not base64",
                js(observation("o", v, encoding="@" * 684)),
                None,
                "bad_encoding",
            ),
            (
                "observation: NaN sharpness",
                js(observation("o", v, sharpness=float("nan"))),
                None,
                "invalid",
            ),
            (
                "observation: 10,000-character observation id",
                js(observation("o", v, observation_id="o" * 10_000)),
                None,
                "invalid",
            ),
            ("observation: unknown field", js(observation("o", v, extra="x")), None, "invalid"),
            (
                "observation: a pass with frames but no last_seen",
                js(observation("o", v, frames=12)),
                None,
                "invalid",
            ),
            (
                "observation: a pass last seen before it started",
                js(
                    observation(
                        "o",
                        v,
                        last_seen=(NOW - timedelta(seconds=5)).isoformat(),
                        frames=12,
                        encoded=3,
                        averaged=2,
                    )
                ),
                None,
                "invalid",
            ),
            (
                "observation: captured 1970-01-01",
                js(observation("o", v, captured_at="1970-01-01T00:00:00+01:00")),
                None,
                "invalid",
            ),
            (
                "observation: key is not its store",
                js(observation("o", v)),
                b"store-other",
                "key_mismatch",
            ),
            (
                "observation: another model's encoding",
                js(observation("o", v, model_version="dlib_face_recognition_resnet_model_v1")),
                None,
                "model_mismatch",
            ),
        ]
        for kind, value, obs_key, reason in observation_cases:
            feed.bad(Sent(kind, topics.encodings, reason), value, key=obs_key or STORE.encode())
            good_observation()

        # Handled by design: one observation id is one event, whatever comes with it again.
        feed.send(topics.encodings, js(observation("dup-obs", vectors[2])))
        good_observation()
        feed.send(topics.encodings, js(observation("dup-obs", vectors[3])))
        good_observation()
        feed.sent.append(
            Sent(
                "observation: same id, another vector",
                topics.encodings,
                "ok",
                check=lambda o: (
                    len({m.event_id for m in o.matches if m.observation_id == "dup-obs:0"}) == 1
                    and o.applied(derived_id_of(o, "dup-obs:0"))
                ),
            )
        )

        # -- matches.v1 ---------------------------------------------------------------------
        match_cases: list[tuple[str, bytes, str]] = [
            ("match: not JSON", b"{", "not_json"),
            ("match: NaN distance", js(match("e1", distance=float("nan"))), "invalid"),
            ("match: negative distance", js(match("e1", distance=-1.0)), "invalid"),
            ("match: face id with a Redis hash tag", js(match("e1", face_id="F{x}")), "invalid"),
            (
                "match: captured 1970-01-01 (broke the sink's script)",
                js(match("e1", captured_at="1970-01-01T00:00:00+01:00")),
                "invalid",
            ),
            (
                "match: captured 50 years ahead (trimmed visit history)",
                js(match("e1", captured_at=(NOW + timedelta(days=365 * 50)).isoformat())),
                "invalid",
            ),
            (
                "match: member decision without member id",
                js(match("e1", kind="member", face_id=None)),
                "invalid",
            ),
            ("match: unknown kind", js(match("e1", kind="vip")), "invalid"),
            ("match: 1,000-character event id", js(match("e1", event_id="e" * 1000)), "invalid"),
        ]
        for kind, value, reason in match_cases:
            feed.bad(Sent(kind, topics.matches, reason), value)
            good_event()
        feed.send(topics.matches, js(match("dup-event")))
        feed.send(topics.matches, js(match("dup-event")))
        good_event()
        feed.sent.append(
            Sent(
                "match: the same event twice",
                topics.matches,
                "ok",
                check=lambda o: o.applied("dup-event") and visits_of(o, "dup-event") == [1],
            )
        )
    finally:
        producer.close(timeout=10)

    client = redis.Redis.from_url(settings.redis_url)
    outcome = wait_for_everything(running, feed, client)

    # Every expected dead letter, with its reason; and no other.
    expected = {(s.topic, s.partition, s.offset): s for s in feed.sent if s.expect != "ok"}
    wrong = []
    for place, sent in expected.items():
        letter = outcome.letters.get(place)
        got = letter.reason if letter else "not dead-lettered"
        if got != sent.expect:
            wrong.append(f"{sent.kind}: expected {sent.expect}, got {got}")
    unexpected = [
        f"{place}: {letter.reason}: {letter.error[:200]}"
        for place, letter in outcome.letters.items()
        if place not in expected
    ]
    failed_checks = [s.kind for s in feed.sent if s.check is not None and not s.check(outcome)]
    dead = [stage for stage, proc in running.workers if proc.poll() is not None]
    assert not wrong, wrong
    assert not unexpected, unexpected
    assert not failed_checks, failed_checks
    assert not dead, f"workers died: {dead} (logs in {running.logs})"
    assert len(feed.sent) >= 25
    print_table(feed.sent, outcome)


def derived_id_of(outcome: Outcome, observation_id: str) -> str:
    return next(m.event_id for m in outcome.matches if m.observation_id == observation_id)


def visits_of(outcome: Outcome, event_id: str) -> list[int]:
    face = derived_id("bad-input", event_id)
    raw = outcome.redis.zrange(f"{outcome.prefix}:{{{STORE}}}:visits:f:{face}", 0, -1)
    return [int(member.decode().rsplit("|", 1)[1]) for member in cast(list[bytes], raw)]


def wait_for_everything(running: Pipeline, feed: Feed, client: redis.Redis) -> Outcome:
    """Poll the topics and Redis until every good message was handled (bounded)."""
    settings, topics = running.settings, running.settings.topics
    deadline = time.monotonic() + WAIT
    while True:
        records = read_topic(settings, topics.matches)
        matches = [
            decode(MatchEvent, r.value) for r in records if (r.partition, r.offset) not in feed.ours
        ]
        letters = {}
        for topic in (topics.frames, topics.encodings, topics.matches):
            for r in read_topic(settings, topics.dlq(topic)):
                letter = decode(DeadLetter, r.value)
                letters[(letter.source_topic, letter.source_partition, letter.source_offset)] = (
                    letter
                )
        outcome = Outcome(matches, letters, client, settings.redis_prefix)
        decided = outcome.frames_decided()
        missing = [f for f in feed.good_frames if f not in decided]
        missing += [o for o in feed.good_observations if o not in decided]
        missing += [e for e in feed.good_events if not outcome.applied(e)]
        # Every match event the matcher wrote reached Redis too.
        missing += [m.event_id for m in matches if not outcome.applied(m.event_id)]
        if not missing:
            return outcome
        dead = [stage for stage, proc in running.workers if proc.poll() is not None]
        if dead or time.monotonic() > deadline:
            pytest.fail(
                f"good input not handled: {missing[:10]} ({len(missing)}); dead workers: "
                f"{dead}; logs in {running.logs}"
            )
        time.sleep(2.0)


def print_table(sent: list[Sent], outcome: Outcome) -> None:
    """The kinds and their outcomes, as docs/reliability.md shows them (run with -s)."""
    for s in sent:
        letter = outcome.letters.get((s.topic, s.partition, s.offset))
        result = f"dead-lettered: `{letter.reason}`" if letter else "handled by design"
        print(f"| {s.kind} | {result} |")


# -- HTTP uploads --------------------------------------------------------------------------------


KEY = "tests-bad-input-8e1f"


@pytest.fixture(scope="module")
def api(engine: FaceEngine) -> TestClient:
    app = create_app(ApiSettings(api_key=KEY, max_upload_bytes=2 * 1024 * 1024), Gallery(), engine)
    return TestClient(app, headers={"X-API-Key": KEY})


@pytest.mark.timeout(180)
def test_bad_uploads_are_refused_with_a_4xx_and_the_service_goes_on(
    api: TestClient, lfw: Path
) -> None:
    photo = photos(lfw, 1)[0]
    jpeg = photo.read_bytes()

    def recognize(name: str, data: bytes, content_type: str = "image/jpeg") -> int:
        return int(api.post("/recognize", files={"image": (name, data, content_type)}).status_code)

    outcomes = {
        "upload: not an image": recognize("x.jpg", b"hello"),
        "upload: empty file": recognize("x.jpg", b""),
        "upload: truncated JPEG": recognize("x.jpg", jpeg[: len(jpeg) // 2]),
        "upload: GIF": recognize("x.gif", encode(Image.new("RGB", (64, 64)), "GIF")),
        "upload: PNG header claiming 100k x 100k": recognize("x.png", png_claiming(10**5, 10**5)),
        "upload: over the byte limit": recognize("x.jpg", b"\xff\xd8" + b"\x00" * 3 * 2**20),
        "upload: wrong content type": recognize("x.txt", jpeg, "text/plain"),
        "upload: no file field": api.post("/recognize", data={"image": "x"}).status_code,
        "upload: no API key": TestClient(api.app)
        .post("/recognize", files={"image": ("x.jpg", jpeg, "image/jpeg")})
        .status_code,
        "upload: enroll under an id with / and {}": api.post(
            "/enroll", data={"identity_id": "a/b{c}"}, files={"photos": ("x.jpg", jpeg)}
        ).status_code,
        "upload: 16-bit greyscale PNG": recognize("x.png", wide_grey_png(photo), "image/png"),
        "upload: MPO phone photo": recognize("x.jpg", mpo(photo)),
    }
    for kind, status in outcomes.items():
        print(f"| {kind} | {status} |")
    server_errors = {k: s for k, s in outcomes.items() if s >= 500}
    assert not server_errors, server_errors
    # Accepted: a 16-bit PNG and an MPO phone photo (the core decodes both with bounded
    # memory, the MPO on its first picture); a photo sent as text/plain (the bytes decide what
    # an upload is, not its label).
    accepted = (
        "upload: 16-bit greyscale PNG",
        "upload: MPO phone photo",
        "upload: wrong content type",
    )
    assert all(outcomes[k] == 200 for k in accepted), outcomes
    refused = [k for k in outcomes if k not in accepted]
    assert all(400 <= outcomes[k] < 500 for k in refused), outcomes
    after = api.post("/recognize", files={"image": ("ok.jpg", jpeg, "image/jpeg")})
    assert after.status_code == 200 and len(after.json()["faces"]) >= 1
