"""The matcher on the real broker and Redis, with real encodings of LFW photos.

In-process tests drive :class:`MatcherHandler` directly (its changelog readers are real);
subprocess tests run ``python -m facestream.services.matcher`` as deployed: a restart that
rebuilds its shard, and two matchers sharing the partitions through a rebalance.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from facestream.core.engine import MODEL_VERSION, Encoding
from facestream.core.photos import encode_many, image_files
from facestream.runtime.runner import Poison, Record
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import (
    Box,
    FaceObservation,
    MatchEvent,
    MemberRecord,
    SchemaError,
    decode,
    derived_id,
)
from facestream.schemas.keys import identity_key, partition_for
from facestream.schemas.messages import IdentityRecordV1
from facestream.services.matcher.cli import matcher_command
from facestream.services.matcher.presence import acknowledgements
from facestream.services.matcher.settings import MatcherSettings
from facestream.services.matcher.worker import MatcherHandler
from tests.kafka_fixtures import PARTITIONS, pipeline_env

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
# Pairs chosen for clear within-person distances (0.35-0.42) and > 0.57 between people.
PEOPLE = {"Gordon_Brown": 3, "Amber_Tamblyn": 2, "Carl_Reiner": 2}


# -- helpers shared with test_members -------------------------------------------------------


def encode_people(lfw: Path, people: dict[str, int]) -> dict[str, list[Encoding]]:
    """The first ``n`` photos of each person, encoded (first encodable face of each)."""
    paths = [p for name, n in people.items() for p in image_files(lfw / name)[:n]]
    out: dict[str, list[Encoding]] = {}
    for enc in encode_many(paths, workers=1):
        face = next((f for f in enc.faces if f.encoding is not None), None)
        assert face is not None and face.encoding is not None, enc.path
        out.setdefault(enc.path.parent.name, []).append(face.encoding)
    return out


def observation(store: str, obs_id: str, vector: Encoding, seconds: int = 0) -> FaceObservation:
    return FaceObservation(
        observation_id=obs_id,
        frame_id=obs_id.split(":")[0],
        face_index=0,
        store_id=store,
        camera_id="c1",
        captured_at=T0 + timedelta(seconds=seconds),
        box=Box(top=10, right=110, bottom=110, left=10),
        size_px=100,
        sharpness=50.0,
        detector="hog",
        model_version=MODEL_VERSION,
        encoding=vector,
    )


def record(settings: PipelineSettings, obs: FaceObservation, offset: int = 0) -> Record:
    part = partition_for(obs.store_id, PARTITIONS)
    return Record(settings.topics.encodings, part, offset, obs.store_id.encode(), obs.to_bytes())


def produce(settings: PipelineSettings, topic: str, items: list[tuple[Any, ...]]) -> None:
    """Send ``(key, value[, partition])`` items and wait for every acknowledgement."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        futures = [
            producer.send(topic, key=i[0], value=i[1], partition=i[2] if len(i) > 2 else None)
            for i in items
        ]
        for f in futures:
            f.get(timeout=20)
    finally:
        producer.close(timeout=10)


def read_all(settings: PipelineSettings, topic: str, expect: int, timeout: float = 30) -> list[Any]:
    """Every record of ``topic`` from the start, waiting (bounded) until ``expect`` arrived."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=300).values():
                out += recs
        return out
    finally:
        consumer.close()


def events(records: list[Any]) -> list[MatchEvent]:
    return [decode(MatchEvent, r.value) for r in records]


def start_matcher(settings: PipelineSettings, idle: float, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "facestream.services.matcher", "--max-idle-seconds", str(idle)],
        cwd=ROOT,
        env={**pipeline_env(settings), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """Wait for a matcher to stop by itself; its log (stderr). Fails on a non-zero exit."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"matcher did not stop in {timeout} s:\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return err


def stores_on_distinct_partitions(n: int) -> list[str]:
    """``n`` store ids that murmur2 puts on ``n`` different partitions."""
    found: dict[int, str] = {}
    for i in range(1000):
        found.setdefault(partition_for(f"store{i}", PARTITIONS), f"store{i}")
        if len(found) == n:
            return [found[p] for p in sorted(found)]
    raise AssertionError("not enough partitions")


def clean_redis(settings: PipelineSettings) -> None:
    """Delete the test's Redis keys (heartbeats, erasure acknowledgements, visits)."""
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _redis_keys(pipeline: PipelineSettings) -> Iterator[None]:
    yield
    clean_redis(pipeline)


@pytest.fixture(scope="module")
def faces(lfw: Path) -> dict[str, list[Encoding]]:
    return encode_people(lfw, PEOPLE)


@pytest.fixture
def make_handler(pipeline: PipelineSettings) -> Iterator[Any]:
    """Build, start and (at the end) close matchers owning the partitions given."""
    made: list[MatcherHandler] = []

    def make(partitions: range | list[int] = range(PARTITIONS), **cfg: Any) -> MatcherHandler:
        settings = MatcherSettings(
            matcher_id=f"t-{uuid.uuid4().hex[:6]}", startup_timeout=20, **cfg
        )
        handler = MatcherHandler(settings, pipeline)
        made.append(handler)
        handler.start()
        handler.on_assigned([TopicPartition(pipeline.topics.encodings, p) for p in partitions])
        return handler

    yield make
    for handler in made:
        handler.close()


def match_of(outputs: Any) -> MatchEvent:
    [event] = [decode(MatchEvent, o.value) for o in outputs if o.kind == "match"]
    return event


# -- decisions (in process) -----------------------------------------------------------------


def test_member_first_and_members_followed_live(
    pipeline: PipelineSettings, faces: dict[str, list[Encoding]], make_handler: Any
) -> None:
    gordon = faces["Gordon_Brown"]
    member = MemberRecord(member_id="m-gb", name="GB", encodings=gordon[:2], enrolled_at=T0)
    produce(pipeline, pipeline.topics.members, [(b"m-gb", member.to_bytes())])
    handler = make_handler()

    event = match_of(handler.handle(record(pipeline, observation("s1", "f1:0", gordon[2]))))
    assert (event.kind, event.member_id, event.face_id) == ("member", "m-gb", None)
    assert event.event_id == derived_id("match", "f1:0")
    assert event.distance is not None and event.distance <= 0.5

    # A member enrolled while the matcher runs is found once idle() has read members.v1.
    amber = faces["Amber_Tamblyn"]
    later = MemberRecord(member_id="m-at", encodings=amber[:1], enrolled_at=T0)
    produce(pipeline, pipeline.topics.members, [(b"m-at", later.to_bytes())])
    deadline = time.monotonic() + 10
    while "m-at" not in handler.members.gallery and time.monotonic() < deadline:
        handler.idle()
        time.sleep(0.05)
    event = match_of(handler.handle(record(pipeline, observation("s1", "f2:0", amber[1]))))
    assert (event.kind, event.member_id) == ("member", "m-at")


def test_member_scales_are_computed_in_the_background(
    pipeline: PipelineSettings, faces: dict[str, list[Encoding]], make_handler: Any
) -> None:
    produce(
        pipeline,
        pipeline.topics.members,
        [
            (
                f"m-{name}".encode(),
                MemberRecord(member_id=f"m-{name}", encodings=enc[:1], enrolled_at=T0).to_bytes(),
            )
            for name, enc in faces.items()
        ],
    )
    lazy = make_handler(member_scales="lazy")
    handler = make_handler()  # background, the default
    assert lazy.members.judge is not None and handler.members.judge is not None
    table = handler.members.judge.scales
    deadline = time.monotonic() + 20
    while len(table) < len(handler.members.gallery) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(table) == len(handler.members.gallery) >= len(faces)
    assert len(lazy.members.judge.scales) == 0
    # The same decision either way; the background table answered it without a search.
    probe = record(pipeline, observation("s1", "ms1:0", faces["Gordon_Brown"][2]))
    assert match_of(handler.handle(probe)) == match_of(lazy.handle(probe))
    assert table.stats["cached"] >= 1 and table.stats["computed"] == 0
    assert lazy.members.judge.scales.stats["computed"] == 1


def test_a_store_cohort_puts_the_store_visitors_in_the_face_scale(
    pipeline: PipelineSettings,
    faces: dict[str, list[Encoding]],
    make_handler: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler = make_handler(member_probe_cohort="store")
    plain = make_handler()
    asked: list[list[Any]] = []
    for made in (handler, plain):
        identify = made.members.identify

        def spy(vector: Any, probe_cohorts: Any = (), identify: Any = identify) -> Any:
            asked.append(list(probe_cohorts))
            return identify(vector, probe_cohorts)

        monkeypatch.setattr(made.members, "identify", spy)
    amber = faces["Amber_Tamblyn"]
    for made in (handler, plain):
        match_of(made.handle(record(pipeline, observation("s9", "pc0:0", amber[0]))))
        match_of(made.handle(record(pipeline, observation("s9", "pc1:0", amber[1], 60))))
    store = handler.shards.store_gallery("s9")
    assert store is not None and len(store) == 1
    # The store's shard is the face's cohort with the setting, and only with it (the first
    # face comes before the store has a shard).
    assert [len(a) for a in asked] == [0, 1, 0, 0]
    assert asked[1][0] is store
    # store_both: a member judge of its own for the store, with its shard as a cohort, that
    # goes with the shard.
    both = make_handler(member_probe_cohort="store_both")
    for i, face in enumerate(amber[:2]):
        match_of(both.handle(record(pipeline, observation("s9", f"pb{i}:0", face, 60 * i))))
    [judge] = both.members._store_judges.values()
    assert judge.cohorts[-1] is both.shards.store_gallery("s9")
    assert judge.gallery is both.members.gallery
    both.members.keep_store_judges(both.shards.store_galleries())
    assert len(both.members._store_judges) == 1
    both.members.keep_store_judges([])
    assert not both.members._store_judges


def test_new_then_returning_and_replay_is_identical(
    pipeline: PipelineSettings, faces: dict[str, list[Encoding]], make_handler: Any
) -> None:
    amber = faces["Amber_Tamblyn"]
    handler = make_handler()
    first = handler.handle(record(pipeline, observation("s1", "f1:0", amber[0])))
    face_id = derived_id("face", "f1:0")
    [identity] = [o for o in first if o.kind == "identity"]
    assert identity.key == identity_key("s1", face_id).encode()
    assert identity.partition == partition_for("s1", PARTITIONS)  # the observation's own
    event = match_of(first)
    assert (event.kind, event.face_id, event.distance) == ("new", face_id, None)

    again = match_of(handler.handle(record(pipeline, observation("s1", "f2:0", amber[1], 60))))
    assert (again.kind, again.face_id, again.matched_store_id) == ("returning", face_id, "s1")

    # A retried batch re-handles f1:0: the same outputs, byte for byte (not "returning").
    assert handler.handle(record(pipeline, observation("s1", "f1:0", amber[0]))) == first

    # After a crash, a matcher rebuilt from identities.v1 re-emits the same "new" too.
    produce(pipeline, pipeline.topics.identities, [(o.key, o.value, o.partition) for o in first])
    rebuilt = make_handler()
    assert rebuilt.handle(record(pipeline, observation("s1", "f1:0", amber[0]))) == first
    other = match_of(rebuilt.handle(record(pipeline, observation("s1", "f3:0", amber[1]))))
    assert (other.kind, other.face_id) == ("returning", face_id)

    # Erasure: the tombstone reaches the live shard through idle(), which acknowledges it.
    subject = identity_key("s1", face_id)
    produce(pipeline, pipeline.topics.identities, [(subject.encode(), None, identity.partition)])
    client = redis.Redis.from_url(pipeline.redis_url)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rebuilt.idle()
        if rebuilt.settings.matcher_id in acknowledgements(client, pipeline.redis_prefix, subject):
            break
        time.sleep(0.05)
    assert rebuilt.settings.matcher_id in acknowledgements(client, pipeline.redis_prefix, subject)
    gone = match_of(rebuilt.handle(record(pipeline, observation("s1", "f4:0", amber[1]))))
    assert (gone.kind, gone.face_id) == ("new", derived_id("face", "f4:0"))


def test_neighbour_store_is_searched_as_a_replica(
    pipeline: PipelineSettings, faces: dict[str, list[Encoding]], make_handler: Any
) -> None:
    here, there = stores_on_distinct_partitions(2)
    carl = faces["Carl_Reiner"]
    # Written as version 1 (one encoding), as matchers before learning did: still read.
    known = IdentityRecordV1(
        face_id="F-carl", store_id=there, encoding=carl[0], first_seen=T0, observation_id="x:0"
    )
    key = identity_key(there, "F-carl").encode()
    produce(
        pipeline, pipeline.topics.identities, [(key, known.to_bytes(), partition_for(there, 4))]
    )
    mine = [partition_for(here, PARTITIONS)]

    alone = make_handler(mine)
    assert (
        match_of(alone.handle(record(pipeline, observation(here, "f1:0", carl[1])))).kind == "new"
    )

    with_neighbour = make_handler(mine, neighbours={here: [there]})
    event = match_of(with_neighbour.handle(record(pipeline, observation(here, "f1:0", carl[1]))))
    assert (event.kind, event.face_id, event.matched_store_id) == ("returning", "F-carl", there)
    assert event.store_id == here


def test_rebalance_keeps_what_comes_back_and_drops_the_rest(
    pipeline: PipelineSettings, faces: dict[str, list[Encoding]], make_handler: Any
) -> None:
    stores = stores_on_distinct_partitions(PARTITIONS)
    vectors = [faces["Gordon_Brown"][0], faces["Amber_Tamblyn"][0], faces["Carl_Reiner"][0]]
    handler = make_handler()
    firsts = [
        handler.handle(record(pipeline, observation(s, f"f{i}:0", vectors[i % 3])))
        for i, s in enumerate(stores)
    ]
    assert handler.shards.stores() == sorted(stores)
    encodings = pipeline.topics.encodings
    # An eager rebalance: everything revoked, one partition back.
    handler.on_revoked([TopicPartition(encodings, p) for p in range(PARTITIONS)])
    keep = partition_for(stores[0], PARTITIONS)
    handler.on_assigned([TopicPartition(encodings, keep)])
    handler.idle()
    assert handler.shards.stores() == [stores[0]]
    again = handler.handle(record(pipeline, observation(stores[0], "f0:0", vectors[0])))
    assert again == firsts[0]


def test_bad_observations_are_poison(
    pipeline: PipelineSettings, faces: dict[str, list[Encoding]], make_handler: Any
) -> None:
    handler = make_handler()
    good = record(pipeline, observation("s1", "f1:0", faces["Carl_Reiner"][0]))
    with pytest.raises(Poison) as caught:
        handler.handle(Record(good.topic, good.partition, 0, b"s2", good.value))
    assert caught.value.reason == "key_mismatch"
    with pytest.raises(Poison):
        handler.handle(Record(good.topic, good.partition, 0, None, good.value))
    with pytest.raises(SchemaError):
        handler.handle(Record(good.topic, good.partition, 0, b"s1", b"{not json"))


# -- the matcher process ----------------------------------------------------------------------


def test_restart_rebuilds_the_shard(
    pipeline: PipelineSettings, faces: dict[str, list[Encoding]]
) -> None:
    amber = faces["Amber_Tamblyn"]
    first = observation("s1", "f1:0", amber[0])
    produce(
        pipeline,
        pipeline.topics.encodings,
        [(b"s1", first.to_bytes()), (b"s2", first.to_bytes())],  # the second: key mismatch
    )
    finish(start_matcher(pipeline, idle=2))
    [new] = events(read_all(pipeline, pipeline.topics.matches, 1))
    assert (new.kind, new.face_id) == ("new", derived_id("face", "f1:0"))
    [dead] = read_all(pipeline, pipeline.topics.dlq(pipeline.topics.encodings), 1)
    assert b"key_mismatch" in dead.value

    produce(
        pipeline,
        pipeline.topics.encodings,
        [(b"s1", observation("s1", "f2:0", amber[1]).to_bytes())],
    )
    log = finish(start_matcher(pipeline, idle=2))
    assert "1 shards, 1 visitors" in log  # read back from identities.v1
    later = events(read_all(pipeline, pipeline.topics.matches, 2))[-1]
    assert (later.kind, later.face_id, later.observation_id) == ("returning", new.face_id, "f2:0")


def test_two_matchers_share_partitions_through_a_rebalance(
    pipeline: PipelineSettings, faces: dict[str, list[Encoding]]
) -> None:
    stores = stores_on_distinct_partitions(PARTITIONS)
    vectors = [v for vs in faces.values() for v in vs]
    total = 48
    observations = [
        observation(stores[i % len(stores)], f"f{i}:0", vectors[i % len(vectors)], i)
        for i in range(total)
    ]

    def feed() -> None:
        for i in range(0, total, 4):  # about 4 s of traffic
            produce(
                pipeline,
                pipeline.topics.encodings,
                [(o.store_id.encode(), o.to_bytes()) for o in observations[i : i + 4]],
            )
            time.sleep(0.33)

    feeder = threading.Thread(target=feed)
    one = start_matcher(pipeline, idle=4, FACESTREAM_MATCHER_MATCHER_ID="one")
    feeder.start()
    time.sleep(1.5)
    two = start_matcher(pipeline, idle=4, FACESTREAM_MATCHER_MATCHER_ID="two")
    feeder.join(timeout=30)
    logs = [finish(one), finish(two)]
    # The first matcher had every partition, then gave some to the second.
    assert logs[0].count("partitions assigned") >= 2, logs[0][-3000:]
    assert "partitions assigned" in logs[1], logs[1][-3000:]

    got = events(read_all(pipeline, pipeline.topics.matches, total))
    by_id: dict[str, MatchEvent] = {}
    for event in got:
        # Redelivered observations are allowed, but only as the very same event.
        assert by_id.setdefault(event.event_id, event) == event
    assert set(by_id) == {derived_id("match", o.observation_id) for o in observations}


def test_start_up_errors_are_one_message(pipeline: PipelineSettings) -> None:
    cli = CliRunner()
    args = ["--max-idle-seconds", "1"]
    env = {**pipeline.to_env(), "FACESTREAM_METRICS_PORT": "0"}
    bad = cli.invoke(matcher_command, args, env={**env, "FACESTREAM_MATCHER_INDEX": "kd-tree"})
    assert bad.exit_code == 2, bad.output
    assert "invalid settings: FACESTREAM_MATCHER_INDEX: " in bad.output

    # Kafka out of reach is the entry point's, the same for every worker: see the sink's test.
    # State that cannot be read: a topic prefix with no topics behind it.
    missing = {
        **env,
        "FACESTREAM_TOPIC_PREFIX": "nothing-here.",
        "FACESTREAM_MATCHER_STARTUP_TIMEOUT": "2",
    }
    no_state = cli.invoke(matcher_command, args, env=missing)
    assert no_state.exit_code == 1, no_state.output
    assert "matcher stopped: topic nothing-here.identities.v1 not found" in no_state.output
