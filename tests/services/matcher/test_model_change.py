"""A change of encoder under way, on the real broker (issue 8: ``model_version`` carried by
``members.v1`` and ``identities.v1`` and checked by the matchers).

Two matchers follow the same changelogs, one of today's model and one of the next. Each loads
only the members and visitors recorded with its own model; records written before the field
existed read as today's model. A member re-enrolled with the next model keeps, for today's
matcher, the samples it held: skipping a record must not erase the member."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from facestream.core.engine import MODEL_VERSION
from facestream.core.gallery import GalleryConfig
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import (
    UNSTATED_MODEL_VERSION,
    IdentityRecord,
    MemberRecord,
    decode,
    vector_to_wire,
)
from facestream.schemas.keys import identity_key, partition_for
from facestream.services.matcher.member_tier import MemberTier
from facestream.services.matcher.shards import VisitorShards
from tests.kafka_fixtures import PARTITIONS
from tests.services.matcher.test_matcher import T0
from tests.services.matcher.test_takeover import _skipped

NEXT = "next-encoder-v2"
RNG = np.random.default_rng(23)
STORE = next(s for s in (f"s{i}" for i in range(40)) if partition_for(s, PARTITIONS) == 0)


def _unit() -> NDArray[np.float32]:
    v = RNG.standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


def _near(v: NDArray[np.float32]) -> NDArray[np.float32]:
    return (v + _unit() * 0.1).astype(np.float32)


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    held: list[Any] = []
    yield held
    for each in held:
        each.close()


def test_records_without_a_model_read_as_the_model_they_were_made_with() -> None:
    # The default encoder is the one every record was made with before the field: if the
    # default ever changes, UNSTATED_MODEL_VERSION must not (it names the past).
    assert UNSTATED_MODEL_VERSION == MODEL_VERSION
    v = vector_to_wire(_unit())
    old = MemberRecord(member_id="m", encodings=[v], enrolled_at=T0)
    assert old.model_version is None and old.model == UNSTATED_MODEL_VERSION
    assert b"model_version" not in old.to_bytes()  # readers before the field still accept it
    new = MemberRecord(member_id="m", encodings=[v], enrolled_at=T0, model_version=NEXT)
    assert decode(MemberRecord, new.to_bytes()).model == NEXT
    version1 = (
        b'{"v": 1, "face_id": "F", "store_id": "s", "encoding": "%s", '
        b'"first_seen": "2026-11-29T10:00:00Z", "observation_id": "o"}' % v.encode()
    )
    assert IdentityRecord.read(version1).model == UNSTATED_MODEL_VERSION
    minted = IdentityRecord.minted(
        face_id="F", store_id="s", encoding=v, first_seen=T0, observation_id="o", model_version=NEXT
    )
    assert IdentityRecord.read(minted.to_bytes()).model == NEXT


def test_each_matcher_loads_only_the_members_of_its_model(
    pipeline: PipelineSettings, closing: list[Any]
) -> None:
    faces = {m: _unit() for m in ("legacy", "today", "next", "moved")}
    moved_next = _unit()  # the re-enrolment encodes anew: other vectors

    def member(member_id: str, vector: NDArray[np.float32], model: str | None) -> bytes:
        record = MemberRecord(
            member_id=member_id,
            encodings=[vector_to_wire(vector)],
            enrolled_at=T0,
            model_version=model,
        )
        return record.to_bytes()

    changelog = [
        ("legacy", member("legacy", faces["legacy"], None)),  # written before the field
        ("today", member("today", faces["today"], MODEL_VERSION)),
        ("next", member("next", faces["next"], NEXT)),
        ("moved", member("moved", faces["moved"], MODEL_VERSION)),
        ("moved", member("moved", moved_next, NEXT)),  # re-enrolled with the next model
    ]
    producer = make_producer(pipeline)
    try:
        for key, value in changelog:
            producer.send(pipeline.topics.members, value, key.encode()).get(timeout=20)
    finally:
        producer.close()

    def tier(model: str) -> MemberTier:
        made = MemberTier(
            kafka=pipeline,
            topic=pipeline.topics.members,
            config=GalleryConfig(),
            on_erased=lambda _member: None,
            client_id=f"model-change-{model}",
            model_version=model,
        )
        closing.append(made)
        return made

    before = _skipped("member", "model_mismatch")
    today = tier(MODEL_VERSION)
    assert today.start(timeout=20) == len(changelog)
    assert _skipped("member", "model_mismatch") == before + 2  # next, moved's new record
    upcoming = tier(NEXT)
    upcoming.start(timeout=20)
    assert _skipped("member", "model_mismatch") == before + 2 + 3  # legacy, today, moved's first

    assert sorted(i.id for i in today.gallery.identities()) == ["legacy", "moved", "today"]
    assert sorted(i.id for i in upcoming.gallery.identities()) == ["moved", "next"]
    # Today's matcher still knows the moved member by the samples of its own model.
    assert np.array_equal(today.gallery.samples("moved")[0], faces["moved"])
    assert np.array_equal(upcoming.gallery.samples("moved")[0], moved_next)
    found = today.identify(_near(faces["moved"]))
    assert found.identity is not None and found.identity.id == "moved"
    assert today.identify(_near(faces["next"])).identity is None
    found = upcoming.identify(_near(faces["next"]))
    assert found.identity is not None and found.identity.id == "next"
    assert upcoming.identify(_near(faces["legacy"])).identity is None


def test_each_matcher_loads_only_the_visitors_of_its_model_and_writes_its_own(
    pipeline: PipelineSettings, closing: list[Any]
) -> None:
    looks = {face: _unit() for face in ("legacy", "today", "next")}

    def record(face: str, model: str | None) -> bytes:
        made = IdentityRecord.minted(
            face_id=face,
            store_id=STORE,
            encoding=vector_to_wire(looks[face]),
            first_seen=T0,
            observation_id=f"{face}-obs0",
            model_version=model,
        )
        return made.to_bytes()

    producer = make_producer(pipeline)
    try:
        for face, model in (("legacy", None), ("today", MODEL_VERSION), ("next", NEXT)):
            key = identity_key(STORE, face).encode()
            producer.send(pipeline.topics.identities, record(face, model), key, partition=0).get(
                timeout=20
            )
    finally:
        producer.close()

    def shards(model: str) -> VisitorShards:
        made = VisitorShards(
            kafka=pipeline,
            topic=pipeline.topics.identities,
            config=GalleryConfig(),
            neighbours={},
            on_erased=lambda _key: None,
            client_id=f"model-change-{model}",
            model_version=model,
        )
        closing.append(made)
        made.start(timeout=20)
        made.own([0], timeout=20)
        return made

    before = _skipped("visitor", "model_mismatch")
    today = shards(MODEL_VERSION)
    assert _skipped("visitor", "model_mismatch") == before + 1
    upcoming = shards(NEXT)
    assert _skipped("visitor", "model_mismatch") == before + 1 + 2

    def known(held: VisitorShards) -> set[str]:
        found = (held.identify(STORE, _near(v)) for v in looks.values())
        return {m.face_id for m in found if m is not None}

    assert known(today) == {"legacy", "today"}
    assert known(upcoming) == {"next"}
    # What a matcher writes names its model, a legacy visitor's record included.
    learned = today.learn(STORE, "legacy", "legacy-obs1", _near(looks["legacy"]), T0)
    assert learned.model_version == MODEL_VERSION
    seen = upcoming.sighted(STORE, "next", T0 + timedelta(days=2))
    assert seen is not None and seen.model_version == NEXT
