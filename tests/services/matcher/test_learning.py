"""Visitors and members that learn: real LFW photos of one person, the real broker and Redis.

Tom Ridge, photographed four ways: B is a confident match of A (learned), C matches B but not A,
and D matches A (not confidently) but B much better. The distances are asserted first, so that
a change of model or photos fails loudly instead of making these tests vacuous.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from kafka.structs import TopicPartition
from prometheus_client import REGISTRY

from facestream.admin.erasure import erase
from facestream.core.engine import Encoding, FaceEngine
from facestream.core.policy import MEMBER_MAX_LEARNED
from facestream.runtime.runner import Output
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import (
    IdentityRecord,
    MemberRecord,
    MemberSamples,
    decode,
    derived_id,
    vector_to_wire,
)
from facestream.schemas.keys import identity_key, partition_for
from facestream.schemas.messages import IdentityRecordV1
from facestream.services.matcher.presence import acknowledgements
from facestream.services.matcher.settings import MatcherSettings
from facestream.services.matcher.worker import MatcherHandler
from tests.kafka_fixtures import PARTITIONS, read_topic
from tests.services.matcher.test_matcher import (
    T0,
    clean_redis,
    match_of,
    observation,
    produce,
    record,
)

PHOTOS = {"a": "0011", "b": "0014", "c": "0015", "d": "0002"}
STORE = "s1"
FACE = derived_id("face", "a:0")  # the FaceId that photo A mints


@dataclass(frozen=True)
class Looks:
    a: Encoding
    b: Encoding
    c: Encoding
    d: Encoding


def distance(x: Encoding, y: Encoding) -> float:
    return float(np.linalg.norm(x - y))


def encode(engine: FaceEngine, path: Path) -> Encoding:
    [face] = [f for f in engine.faces_in(path) if f.encoding is not None]
    assert face.encoding is not None
    return face.encoding


@pytest.fixture(scope="module")
def looks(engine: FaceEngine, lfw: Path) -> Looks:
    found = {k: encode(engine, lfw / "Tom_Ridge" / f"Tom_Ridge_{n}.jpg") for k, n in PHOTOS.items()}
    got = Looks(**found)
    s = MatcherSettings()
    # What the photos were picked for, against the default settings, with room to spare.
    room = 0.04
    assert s.visitor_learn_min_distance < distance(got.a, got.b) < s.visitor_learn_threshold - room
    assert distance(got.b, got.c) < s.visitor_threshold - room
    assert distance(got.a, got.c) > s.visitor_threshold + room
    ad = distance(got.a, got.d)
    assert s.visitor_learn_threshold + room < ad < s.visitor_threshold - room
    assert distance(got.b, got.d) < ad - 0.1
    return got


@pytest.fixture(autouse=True)
def _redis_keys(pipeline: PipelineSettings) -> Iterator[None]:
    yield
    clean_redis(pipeline)


Make = Callable[..., MatcherHandler]


@pytest.fixture
def matcher(pipeline: PipelineSettings) -> Iterator[Make]:
    """Started matchers owning every partition, shards built (closed at the end); settings
    as keywords. They decide on raw distances (``policy=distance``): learning is the same
    whatever the policy, and raw thresholds let the photos be picked for what each test needs
    (the normalised policy has tests of its own)."""
    made: list[MatcherHandler] = []

    def make(**cfg: object) -> MatcherHandler:
        settings = MatcherSettings.model_validate(
            {
                "matcher_id": f"t-{uuid.uuid4().hex[:6]}",
                "startup_timeout": 20,
                "policy": "distance",
                **cfg,
            }
        )
        handler = MatcherHandler(settings, pipeline)
        made.append(handler)
        handler.start()
        partitions = [TopicPartition(pipeline.topics.encodings, p) for p in range(PARTITIONS)]
        handler.on_assigned(partitions)
        handler.idle()  # the runner's first poll: the shards are built
        return handler

    yield make
    for handler in made:
        handler.close()


def see(
    pipeline: PipelineSettings,
    handler: MatcherHandler,
    obs_id: str,
    vector: Encoding,
    **fields: object,
) -> list[Output]:
    """The outputs for one sighting in STORE (``fields`` override the observation's)."""
    obs = observation(STORE, obs_id, vector).model_copy(update=fields)
    return list(handler.handle(record(pipeline, obs)))


def identities(outputs: Sequence[Output]) -> list[Output]:
    return [o for o in outputs if o.kind == "identity"]


def write(pipeline: PipelineSettings, outputs: Sequence[Output]) -> None:
    """Send the identity records among ``outputs`` as the runner would."""
    topic = pipeline.topics.identities
    produce(pipeline, topic, [(o.key, o.value, o.partition) for o in outputs if o.topic == topic])


def learned_count() -> float:
    return REGISTRY.get_sample_value("facestream_matcher_samples_learned_total") or 0.0


# -- learning ---------------------------------------------------------------------------------


def test_a_learned_sample_recognises_a_later_look(
    pipeline: PipelineSettings, looks: Looks, matcher: Make
) -> None:
    handler = matcher()
    before = learned_count()
    minted = see(pipeline, handler, "a:0", looks.a)
    assert (match_of(minted).kind, match_of(minted).face_id) == ("new", FACE)

    taught = see(pipeline, handler, "b:0", looks.b)
    assert (match_of(taught).kind, match_of(taught).face_id) == ("returning", FACE)
    [first], [update] = identities(minted), identities(taught)
    # The same key and explicit partition as the minting record: it replaces it on compaction.
    assert (update.key, update.partition) == (first.key, first.partition)
    assert update.partition == partition_for(STORE, PARTITIONS)
    record_ = IdentityRecord.read(update.value)
    assert record_.learned_from == ["a:0", "b:0"]
    assert record_.encodings == [vector_to_wire(looks.a), vector_to_wire(looks.b)]
    assert (record_.observation_id, record_.first_seen) == ("a:0", T0)
    assert learned_count() == before + 1

    later = match_of(see(pipeline, handler, "c:0", looks.c))
    assert (later.kind, later.face_id) == ("returning", FACE)
    assert later.distance == pytest.approx(distance(looks.b, looks.c), abs=1e-4)

    # The control: without learning, C is a stranger. The learned sample made the difference.
    fixed = matcher(visitor_max_samples=1)
    see(pipeline, fixed, "a:0", looks.a)
    assert identities(see(pipeline, fixed, "b:0", looks.b)) == []
    assert match_of(see(pipeline, fixed, "c:0", looks.c)).kind == "new"


def test_only_good_new_confident_sightings_are_learned(
    pipeline: PipelineSettings, looks: Looks, matcher: Make
) -> None:
    handler = matcher(visitor_max_samples=2)
    see(pipeline, handler, "a:0", looks.a)
    # Not confident: D is a match of A (returning) but beyond the learning threshold.
    assert match_of(see(pipeline, handler, "d:0", looks.d)).face_id == FACE
    # A near-duplicate of a sample held adds nothing; nor does a small or blurred face.
    assert identities(see(pipeline, handler, "a2:0", looks.a)) == []
    assert identities(see(pipeline, handler, "b1:0", looks.b, size_px=45)) == []
    assert identities(see(pipeline, handler, "b2:0", looks.b, sharpness=5.0)) == []
    assert handler.shards.sample_count(STORE, FACE) == 1
    assert len(identities(see(pipeline, handler, "b:0", looks.b))) == 1
    # The cap (2 here) is reached; the minting sample stays first, never displaced.
    assert identities(see(pipeline, handler, "d2:0", looks.d)) == []
    assert handler.shards.record(STORE, FACE).learned_from == ["a:0", "b:0"]


def test_learning_refuses_settings_that_would_merge_or_never_learn() -> None:
    with pytest.raises(ValueError, match="must not exceed visitor_threshold"):
        MatcherSettings(visitor_learn_threshold=0.55)
    with pytest.raises(ValueError, match="below visitor_learn_threshold"):
        MatcherSettings(visitor_learn_min_distance=0.45)
    assert MatcherSettings(visitor_max_samples=1, visitor_learn_min_distance=0.45)


# -- the changelog: rebuilds, versions, erasure -------------------------------------------------


def test_learned_samples_survive_a_rebuild_and_erasure_removes_them_all(
    pipeline: PipelineSettings, looks: Looks, matcher: Make
) -> None:
    live = matcher()
    outputs = see(pipeline, live, "a:0", looks.a) + see(pipeline, live, "b:0", looks.b)
    write(pipeline, outputs)

    rebuilt = matcher()
    assert rebuilt.shards.sample_count(STORE, FACE) == 2
    assert (match_of(see(pipeline, rebuilt, "c:0", looks.c)).face_id) == FACE

    subject = identity_key(STORE, FACE)
    part = partition_for(STORE, PARTITIONS)
    produce(pipeline, pipeline.topics.identities, [(subject.encode(), None, part)])
    client = redis.Redis.from_url(pipeline.redis_url)
    deadline = time.monotonic() + 10
    while rebuilt.settings.matcher_id not in acknowledgements(
        client, pipeline.redis_prefix, subject
    ):
        assert time.monotonic() < deadline, "erasure not acknowledged"
        rebuilt.idle()
        time.sleep(0.05)
    assert rebuilt.shards.sample_count(STORE, FACE) == 0
    # Neither the learned look nor the minting one is recognised any more.
    for obs_id, vector in (("c2:0", looks.c), ("b2:0", looks.b), ("a2:0", looks.a)):
        assert match_of(see(pipeline, rebuilt, obs_id, vector)).face_id != FACE

    # A learned record that lands after the tombstone (written while the erasure was on its
    # way) must not bring the visitor back: it is ignored, and tombstoned again.
    write(pipeline, identities(outputs)[-1:])
    rebuilt.idle()
    again = see(pipeline, rebuilt, "c3:0", looks.c)
    assert match_of(again).face_id != FACE
    [tombstone] = [o for o in again if o.kind == "tombstone"]
    assert (tombstone.key, tombstone.value, tombstone.partition) == (subject.encode(), None, part)
    produce(pipeline, pipeline.topics.identities, [(subject.encode(), None, part)])
    assert matcher().shards.sample_count(STORE, FACE) == 0


def test_version_1_records_are_read_and_upgraded_when_they_learn(
    pipeline: PipelineSettings, looks: Looks, matcher: Make
) -> None:
    handler = matcher()
    old = IdentityRecordV1(
        face_id="F-old", store_id=STORE, encoding=looks.a, first_seen=T0, observation_id="x:0"
    )
    key = identity_key(STORE, "F-old").encode()
    # Written while the matcher runs, just before the batch (after the runner's last idle()
    # poll): read before the batch is decided all the same.
    produce(pipeline, pipeline.topics.identities, [(key, old.to_bytes(), partition_for(STORE, 4))])
    taught = see(pipeline, handler, "b:0", looks.b)
    assert (match_of(taught).kind, match_of(taught).face_id) == ("returning", "F-old")
    [update] = identities(taught)
    upgraded = IdentityRecord.read(update.value)
    assert (upgraded.v, upgraded.learned_from) == (2, ["x:0", "b:0"])
    assert upgraded.encodings[0] == old.encoding
    assert IdentityRecord.read(old.to_bytes()).encodings == [old.encoding]


# -- replays and timing -------------------------------------------------------------------------


def test_a_retried_batch_gives_the_same_outputs_and_a_rebuild_the_same_record(
    pipeline: PipelineSettings, looks: Looks, matcher: Make
) -> None:
    handler = matcher()
    minted = see(pipeline, handler, "a:0", looks.a)
    # One batch, one face at a time: D is matched through A alone, then B teaches the
    # visitor, then C is recognised through B.
    batch = [("d:0", looks.d), ("b:0", looks.b), ("c:0", looks.c)]
    first = [see(pipeline, handler, obs_id, v) for obs_id, v in batch]
    assert [match_of(o).face_id for o in first] == [FACE] * 3
    assert match_of(first[0]).distance == pytest.approx(distance(looks.a, looks.d), abs=1e-4)
    assert [len(identities(o)) for o in first] == [0, 1, 0]

    # Outputs not acknowledged: the runner hands the batch over again. D must not now be
    # matched (and learned) through B, which it came before.
    assert [see(pipeline, handler, obs_id, v) for obs_id, v in batch] == first

    # Acknowledged, then replayed by a matcher rebuilt from identities.v1 (after a crash):
    # B finds its own sample there and re-emits the very record it wrote.
    handler.before_commit()
    write(pipeline, minted + first[1])
    rebuilt = matcher()
    replayed = see(pipeline, rebuilt, "b:0", looks.b)
    assert identities(replayed) == identities(first[1])
    event, original = match_of(replayed), match_of(first[1])
    assert (event.event_id, event.kind, event.face_id) == (
        original.event_id,
        original.kind,
        original.face_id,
    )
    assert event.distance == pytest.approx(original.distance, abs=1e-5)
    # A minted the visitor: its "new" event again, with the visitor's current record (the
    # minting one, with fewer samples, would roll the compacted record back).
    assert see(pipeline, rebuilt, "a:0", looks.a) == [*identities(first[1]), minted[-1]]


def test_a_member_published_just_before_the_batch_is_recognised(
    pipeline: PipelineSettings, looks: Looks, matcher: Make
) -> None:
    handler = matcher()
    member = MemberRecord(member_id="m-tr", encodings=[looks.a], enrolled_at=T0)
    # Published just before the frame, so before its observation. The race: the runner's
    # idle() poll, which waits for nothing, ran before the member's record was fetched. Here
    # it has not run since at all: the batch must still be decided with the member.
    produce(pipeline, pipeline.topics.members, [(b"m-tr", member.to_bytes())])
    event = match_of(see(pipeline, handler, "b:0", looks.b))
    assert (event.kind, event.member_id) == ("member", "m-tr")


# -- members that learn -------------------------------------------------------------------------


def member_samples(outputs: Sequence[Output]) -> list[Output]:
    return [o for o in outputs if o.kind == "member_samples"]


def enroll(pipeline: PipelineSettings, member_id: str, *vectors: Encoding) -> None:
    record = MemberRecord(
        member_id=member_id, encodings=[vector_to_wire(v) for v in vectors], enrolled_at=T0
    )
    produce(pipeline, pipeline.topics.members, [(member_id.encode(), record.to_bytes())])


def test_a_member_learns_a_confident_sighting_and_is_then_recognised_in_a_later_look(
    pipeline: PipelineSettings, looks: Looks, matcher: Make
) -> None:
    s = MatcherSettings()
    # The photos: B is confidently A (learned by a member too), C is B but not A.
    assert s.member_learn_min_distance < distance(looks.a, looks.b) < s.member_learn_threshold
    assert distance(looks.a, looks.c) > s.threshold + 0.04 > distance(looks.b, looks.c) + 0.08

    enroll(pipeline, "m-tr", looks.a)
    without = matcher(member_max_learned=0)
    assert member_samples(see(pipeline, without, "b:0", looks.b)) == []
    assert match_of(see(pipeline, without, "c:0", looks.c)).kind == "new"

    assert s.member_max_learned == 0  # off unless asked for (docs/accuracy.md)
    live = matcher(member_max_learned=MEMBER_MAX_LEARNED)
    small = see(pipeline, live, "b-small:0", looks.b, size_px=60)  # quality: not learned
    assert match_of(small).member_id == "m-tr" and member_samples(small) == []
    outputs = see(pipeline, live, "b:0", looks.b)
    assert match_of(outputs).member_id == "m-tr"
    [learned] = member_samples(outputs)
    assert (learned.topic, learned.key) == (pipeline.topics.member_samples, b"m-tr")
    record = decode(MemberSamples, learned.value)
    assert record.learned_from == ["b:0"] and record.learned_at == T0
    assert record.model_version == live.model_version
    assert np.allclose(record.vectors[0], looks.b, atol=1e-6)
    # The enrolled sample stays, the learned one is beside it: C, which A alone does not
    # reach, is now the member.
    assert live.members.gallery.samples("m-tr").shape == (2, 128)
    event = match_of(see(pipeline, live, "c:0", looks.c))
    assert (event.kind, event.member_id) == ("member", "m-tr")

    # Every matcher learns it from the topic, and a restart reads it back.
    produce(pipeline, pipeline.topics.member_samples, [(learned.key, learned.value)])
    other = matcher(member_max_learned=MEMBER_MAX_LEARNED)
    assert other.members.learned_count("m-tr") == 1
    assert match_of(see(pipeline, other, "c:1", looks.c)).member_id == "m-tr"
    # The sighting that taught it, replayed, teaches nothing again and is the member again.
    again = see(pipeline, other, "b:0", looks.b)
    assert member_samples(again) == [] and match_of(again).member_id == "m-tr"

    # Re-enrolment replaces the enrolled samples and keeps the learned ones.
    enroll(pipeline, "m-tr", looks.a)
    other.idle()
    assert other.members.gallery.samples("m-tr").shape == (2, 128)


def test_learned_member_samples_are_capped_and_never_displace_the_enrolled_ones(
    pipeline: PipelineSettings, looks: Looks, matcher: Make
) -> None:
    enroll(pipeline, "m-tr", looks.a)
    handler = matcher(member_max_learned=1, member_learn_threshold=0.5)
    assert member_samples(see(pipeline, handler, "b:0", looks.b))
    full = see(pipeline, handler, "d:0", looks.d)
    assert match_of(full).member_id == "m-tr" and member_samples(full) == []
    samples = handler.members.gallery.samples("m-tr")
    assert samples.shape == (2, 128)
    assert min(np.linalg.norm(samples - looks.a, axis=1)) < 1e-5  # the enrolled one is kept
    with pytest.raises(ValueError, match="below member_learn_threshold"):
        MatcherSettings(member_max_learned=MEMBER_MAX_LEARNED, member_learn_min_distance=0.4)
    assert MatcherSettings(member_max_learned=0, member_learn_min_distance=0.4)


def test_erasing_a_member_erases_the_learned_samples_everywhere(
    pipeline: PipelineSettings, looks: Looks, matcher: Make
) -> None:
    enroll(pipeline, "m-tr", looks.a)
    live = matcher(member_max_learned=MEMBER_MAX_LEARNED)
    [learned] = member_samples(see(pipeline, live, "b:0", looks.b))
    produce(pipeline, pipeline.topics.member_samples, [(learned.key, learned.value)])
    live.close()  # erase waits for the live matchers; this one has left

    done = erase("m-tr", pipeline, timeout=5)
    assert done.kind == "member" and done.confirmed
    tail = [r for r in read_topic(pipeline, pipeline.topics.member_samples) if r.key == b"m-tr"]
    assert tail[-1].value is None  # the learned samples' key is tombstoned too

    rebuilt = matcher(member_max_learned=MEMBER_MAX_LEARNED)
    assert "m-tr" not in rebuilt.members.gallery
    assert rebuilt.members.learned_count("m-tr") == 0
    for obs_id, vector in (("c:0", looks.c), ("b:1", looks.b)):
        assert match_of(see(pipeline, rebuilt, obs_id, vector)).kind != "member"

    # A matcher that held them drops them with the member's own tombstone as well.
    enroll(pipeline, "m-x", looks.a)
    holder = matcher(member_max_learned=MEMBER_MAX_LEARNED)
    assert member_samples(see(pipeline, holder, "b:2", looks.b))
    produce(pipeline, pipeline.topics.members, [(b"m-x", None)])
    holder.idle()
    holder.members.catch_up(10)
    assert "m-x" not in holder.members.gallery and holder.members.learned_count("m-x") == 0
