"""Visitor retention on the real broker and Redis, with encodings of LFW photos: a visitor unseen
for the retention period (event time) is tombstoned and forgotten, one seen within it is kept
(also across a rebuild from identities.v1), and members are never retired."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from kafka import KafkaProducer
from kafka.structs import TopicPartition
from prometheus_client import REGISTRY

from facestream.core.engine import Encoding
from facestream.core.gallery import Gallery
from facestream.runtime.runner import Output
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import IdentityRecord, MemberRecord, derived_id
from facestream.schemas.keys import RETIRED, identity_key, partition_for
from facestream.services.matcher import decide
from facestream.services.matcher.presence import acknowledgements
from facestream.services.matcher.settings import MatcherSettings
from facestream.services.matcher.worker import MatcherHandler
from tests.kafka_fixtures import PARTITIONS
from tests.services.matcher.test_matcher import (
    PEOPLE,
    T0,
    clean_redis,
    encode_people,
    match_of,
    observation,
    produce,
    record,
)

STORE = "s1"
DAY = 24 * 3600
RETENTION = MatcherSettings().visitor_retention_days * DAY

Make = Callable[..., MatcherHandler]


@pytest.fixture(scope="module")
def faces(lfw: Path) -> dict[str, list[Encoding]]:
    return encode_people(lfw, PEOPLE)


@pytest.fixture(autouse=True)
def _redis_keys(pipeline: PipelineSettings) -> Iterator[None]:
    yield
    clean_redis(pipeline)


@pytest.fixture
def matcher(pipeline: PipelineSettings) -> Iterator[Make]:
    """Started matchers owning every partition, shards built from identities.v1 (closed at the
    end), with the default retention."""
    made: list[MatcherHandler] = []

    def make() -> MatcherHandler:
        settings = MatcherSettings(matcher_id=f"t-{uuid.uuid4().hex[:6]}", startup_timeout=20)
        handler = MatcherHandler(settings, pipeline)
        made.append(handler)
        handler.start()
        handler.on_assigned(
            [TopicPartition(pipeline.topics.encodings, p) for p in range(PARTITIONS)]
        )
        handler.idle()
        return handler

    yield make
    for handler in made:
        handler.close()


def see(
    pipeline: PipelineSettings, handler: MatcherHandler, obs_id: str, vector: Encoding, at: int
) -> list[Output]:
    """The outputs of one face in STORE captured ``at`` seconds after T0, written to the topics
    as the runner would (so that a matcher built later rebuilds from them)."""
    outputs = list(handler.handle(record(pipeline, observation(STORE, obs_id, vector, at))))
    producer = KafkaProducer(bootstrap_servers=pipeline.kafka_bootstrap, acks="all")
    try:
        for o in outputs:
            if o.topic == pipeline.topics.identities:
                producer.send(
                    o.topic, key=o.key, value=o.value, headers=o.headers, partition=o.partition
                ).get(timeout=20)
    finally:
        producer.close(timeout=10)
    return outputs


def written(outputs: Sequence[Output]) -> IdentityRecord | None:
    found = [IdentityRecord.read(o.value) for o in outputs if o.kind == "identity"]
    return found[0] if found else None


def retired_count() -> float:
    return REGISTRY.get_sample_value("facestream_matcher_visitors_retired_total") or 0.0


def test_a_visitor_unseen_for_the_retention_is_retired_everywhere(
    pipeline: PipelineSettings, faces: dict[str, list[Encoding]], matcher: Make
) -> None:
    amber, gordon = faces["Amber_Tamblyn"], faces["Gordon_Brown"]
    handler = matcher()
    face_id = derived_id("face", "a1:0")
    assert match_of(see(pipeline, handler, "a1:0", amber[0], 0)).face_id == face_id
    before = retired_count()

    # Someone else, just inside the retention: the visitor stays.
    kept = see(pipeline, handler, "g1:0", gordon[0], RETENTION)
    assert [o.kind for o in kept if o.kind == "retirement"] == []
    assert handler.shards.sample_count(STORE, face_id) == 1

    # Past it (event time, not the clock): tombstoned before the decision, marked as retired.
    outputs = see(pipeline, handler, "g2:0", gordon[1], RETENTION + 1)
    [tombstone] = [o for o in outputs if o.kind == "retirement"]
    assert outputs[0] is tombstone and tombstone.value is None
    assert tombstone.key == identity_key(STORE, face_id).encode()
    assert tombstone.partition == partition_for(STORE, PARTITIONS)
    assert tombstone.headers == [RETIRED]
    assert match_of(outputs).kind == "returning"  # Gordon is kept
    assert handler.shards.sample_count(STORE, face_id) == 0
    assert retired_count() == before + 1

    # Back after that, the same person is a stranger with a new FaceId.
    back = match_of(see(pipeline, handler, "a2:0", amber[1], RETENTION + 60))
    assert (back.kind, back.face_id) == ("new", derived_id("face", "a2:0"))

    # A matcher rebuilt from identities.v1 holds the two live visitors, not the retired one;
    # a retirement asks no matcher to acknowledge it (erasures do).
    rebuilt = matcher()
    assert rebuilt.shards.sample_count(STORE, face_id) == 0
    assert rebuilt.shards.visitors == 2
    handler.idle()
    rebuilt.idle()  # acknowledgements are written at the heartbeat
    client = redis.Redis.from_url(pipeline.redis_url)
    subject = identity_key(STORE, face_id)
    assert acknowledgements(client, pipeline.redis_prefix, subject) == {}


def test_a_visitor_seen_within_the_retention_is_kept_across_a_rebuild(
    pipeline: PipelineSettings, faces: dict[str, list[Encoding]], matcher: Make
) -> None:
    carl, gordon = faces["Carl_Reiner"], faces["Gordon_Brown"]
    handler = matcher()
    face_id = derived_id("face", "c1:0")
    see(pipeline, handler, "c1:0", carl[0], 0)
    # Seen again (the same photo: nothing to learn) within the day: nothing to write. Sixty
    # days on: the record is written again, for last_seen alone.
    assert written(see(pipeline, handler, "c2:0", carl[0], 3600)) is None
    refreshed = written(see(pipeline, handler, "c3:0", carl[0], 60 * DAY))
    assert refreshed is not None and refreshed.face_id == face_id
    assert refreshed.last_seen == T0 + timedelta(days=60)
    assert (refreshed.first_seen, refreshed.learned_from) == (T0, ["c1:0"])

    # A rebuilt matcher knows the last sighting: 100 days after minting, 40 after it, kept.
    rebuilt = matcher()
    outputs = see(pipeline, rebuilt, "g1:0", gordon[0], 100 * DAY)
    assert [o for o in outputs if o.kind == "retirement"] == []
    again = match_of(see(pipeline, rebuilt, "c4:0", carl[0], 100 * DAY + 60))
    assert (again.kind, again.face_id) == ("returning", face_id)


def test_members_are_never_retired(
    pipeline: PipelineSettings, faces: dict[str, list[Encoding]], matcher: Make
) -> None:
    gordon = faces["Gordon_Brown"]
    member = MemberRecord(member_id="m-gb", encodings=gordon[:2], enrolled_at=T0)
    produce(pipeline, pipeline.topics.members, [(b"m-gb", member.to_bytes())])
    handler = matcher()
    assert match_of(see(pipeline, handler, "g1:0", gordon[2], 0)).member_id == "m-gb"
    later = see(pipeline, handler, "g2:0", gordon[2], 3 * RETENTION)
    assert [o.kind for o in later] == ["match"]
    assert (match_of(later).kind, match_of(later).member_id) == ("member", "m-gb")


def test_the_visitors_due_at_a_decision_go_in_one_removal_at_most_the_cap(
    pipeline: PipelineSettings,
    faces: dict[str, list[Encoding]],
    matcher: Make,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    amber, carl, gordon = faces["Amber_Tamblyn"], faces["Carl_Reiner"], faces["Gordon_Brown"]
    removals: list[list[str]] = []
    remove_many = Gallery.remove_many

    def spied(gallery: Gallery, identity_ids: Iterable[str]) -> int:
        removals.append(list(identity_ids))
        return remove_many(gallery, removals[-1])

    monkeypatch.setattr(Gallery, "remove_many", spied)
    monkeypatch.setattr(decide, "MAX_RETIRED_PER_DECISION", 2)
    handler = matcher()
    for obs_id, vector, at in (
        ("a1:0", amber[0], 0),
        ("c1:0", carl[0], 10),
        ("g1:0", gordon[0], 20),
    ):
        see(pipeline, handler, obs_id, vector, at)
    visitors = [derived_id("face", i) for i in ("a1:0", "c1:0", "g1:0")]

    # All three are due; the two longest unseen go first, in one gallery removal.
    outputs = see(pipeline, handler, "a2:0", amber[1], RETENTION + 30)
    retired = [o.key for o in outputs if o.kind == "retirement"]
    assert retired == [identity_key(STORE, f).encode() for f in visitors[:2]]
    assert removals == [visitors[:2]]
    assert match_of(outputs).kind == "new"  # Amber's visitor is gone
    assert handler.shards.sample_count(STORE, visitors[2]) == 1  # over the cap: still held
    # The next decision retires the rest (and nothing when nobody is due).
    outputs = see(pipeline, handler, "c2:0", carl[1], RETENTION + 40)
    assert [o.key for o in outputs if o.kind == "retirement"] == [
        identity_key(STORE, visitors[2]).encode()
    ]
    assert removals == [visitors[:2], visitors[2:]]
    see(pipeline, handler, "c3:0", carl[1], RETENTION + 50)
    assert len(removals) == 2
