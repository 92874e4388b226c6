"""A replayed observation gets the match event it had, whatever changed since: real matcher
processes on the real broker, encodings of real LFW photos."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from facestream.core.engine import Encoding
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import MemberRecord
from tests.kafka_fixtures import read_topic
from tests.services.matcher.test_matcher import (
    T0,
    clean_redis,
    encode_people,
    events,
    finish,
    observation,
    produce,
    read_all,
    start_matcher,
)

STORE = "s1"


@pytest.fixture(autouse=True)
def _redis_keys(pipeline: PipelineSettings) -> Iterator[None]:
    yield
    clean_redis(pipeline)


@pytest.fixture(scope="module")
def gordon(lfw: Path) -> list[Encoding]:
    return encode_people(lfw, {"Gordon_Brown": 5})["Gordon_Brown"]


@pytest.mark.timeout(300)
def test_a_replay_after_the_person_was_enrolled_re_emits_the_first_decisions(
    pipeline: PipelineSettings, gordon: list[Encoding]
) -> None:
    """A visitor seen twice (new, then returning), then enrolled as a member from two other
    photos. The same encodings published again, to a matcher started afresh: decided anew,
    the second sighting would now be the member. It gets the events it had, byte for byte,
    read back from matches.v1, and no FaceId is minted for it."""
    sightings = [observation(STORE, f"v{i}:0", gordon[n], 60 * i) for i, n in ((1, 1), (2, 4))]
    published = [(STORE.encode(), o.to_bytes()) for o in sightings]
    first_matcher = start_matcher(pipeline, idle=300, FACESTREAM_MATCHER_MATCHER_ID="m1")
    try:
        produce(pipeline, pipeline.topics.encodings, published)
        first = read_all(pipeline, pipeline.topics.matches, 2, timeout=60)
        assert [e.kind for e in events(first)] == ["new", "returning"], events(first)
    finally:
        first_matcher.send_signal(signal.SIGTERM)
        finish(first_matcher)
    minted = {r.key for r in read_topic(pipeline, pipeline.topics.identities)}
    assert len(minted) == 1

    member = MemberRecord(member_id="m-gb", encodings=[gordon[0], gordon[2]], enrolled_at=T0)
    produce(pipeline, pipeline.topics.members, [(b"m-gb", member.to_bytes())])
    produce(pipeline, pipeline.topics.encodings, published)
    later = start_matcher(pipeline, idle=300, FACESTREAM_MATCHER_MATCHER_ID="m2")
    try:
        every = read_all(pipeline, pipeline.topics.matches, 4, timeout=90)
        assert len(every) == 4, events(every)
        # A sighting the member tier now knows, decided afresh, would be the member.
        fresh = observation(STORE, "v3:0", gordon[4], 180)
        produce(pipeline, pipeline.topics.encodings, [(STORE.encode(), fresh.to_bytes())])
        after = events(read_all(pipeline, pipeline.topics.matches, 5, timeout=60))
    finally:
        later.send_signal(signal.SIGTERM)
        log = finish(later)
    assert [r.value for r in every[2:]] == [r.value for r in first], log[-2000:]
    # The minting sighting writes its visitor's record again (it may not have landed): the
    # same key, no other.
    assert {r.key for r in read_topic(pipeline, pipeline.topics.identities)} == minted
    assert (after[-1].kind, after[-1].member_id) == ("member", "m-gb")
    assert "decisions read back" in log
