"""Taking over a partition in bulk, on the real broker: a shard (and the member tier) read from
the changelog in one go must end as the same state applied record by record, and serve on.

The reference is a matcher that follows the changelog while it is written: it applies each
record as it arrives, one gallery change per record (the live path). The one under test reads
the whole changelog afterwards, its samples staged and added in one ``add_many``. Encodings are
random unit vectors: what is compared is two matchers' answers, not a face decision.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client import REGISTRY

from facestream.core.gallery import GalleryConfig
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import IdentityRecord, MemberRecord, MemberSamples, vector_to_wire
from facestream.schemas.keys import RETIRED, identity_key, partition_for
from facestream.services.matcher.member_tier import MemberTier
from facestream.services.matcher.shards import VisitorShards
from facestream.services.matcher.snapshots import SnapshotStore
from tests.kafka_fixtures import PARTITIONS
from tests.services.matcher.test_matcher import T0

MODEL = "test-model"
RNG = np.random.default_rng(11)
STORES = [s for s in (f"s{i}" for i in range(40)) if partition_for(s, PARTITIONS) == 0][:2]
"""Two stores whose records share a partition (the one taken over)."""


def _unit() -> NDArray[np.float32]:
    v = RNG.standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


def _near(v: NDArray[np.float32]) -> NDArray[np.float32]:
    """Another look of the same face (0.1 away)."""
    return (v + _unit() * 0.1).astype(np.float32)


def _skipped(tier: str, reason: str) -> float:
    found = REGISTRY.get_sample_value(
        "facestream_matcher_changelog_skipped_total", {"tier": tier, "reason": reason}
    )
    return found or 0.0


def _wait(step: Callable[[], int], count: int, timeout: float = 20.0) -> None:
    """Call ``step`` (a poll) until it has applied ``count`` records."""
    deadline = time.monotonic() + timeout
    applied = 0
    while applied < count:
        assert time.monotonic() < deadline, f"only {applied} of {count} records arrived"
        applied += step()
        time.sleep(0.02)


def _record(store: str, face: str, vectors: list[NDArray[np.float32]], days: int = 0) -> bytes:
    sources = [f"{face}-obs{i}" for i in range(len(vectors))]
    return IdentityRecord(
        face_id=face,
        store_id=store,
        first_seen=T0,
        observation_id=sources[0],
        encodings=[vector_to_wire(v) for v in vectors],
        learned_from=sources,
        last_seen=T0 + timedelta(days=days),
    ).to_bytes()


def _shards(
    pipeline: PipelineSettings,
    name: str,
    erased: list[str],
    snapshots: SnapshotStore | None = None,
) -> VisitorShards:
    return VisitorShards(
        kafka=pipeline,
        topic=pipeline.topics.identities,
        config=GalleryConfig(),
        neighbours={},
        on_erased=erased.append,
        client_id=f"takeover-{name}",
        snapshots=snapshots,
    )


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Readers to close after the test, whatever happens."""
    held: list[Any] = []
    yield held
    for each in held:
        each.close()


def test_a_shard_taken_over_in_bulk_is_the_one_built_record_by_record(
    pipeline: PipelineSettings, closing: list[Any]
) -> None:
    a, b = STORES
    looks = {face: _unit() for face in "ABCDEFGH"}
    learned = _near(looks["B"])
    key = identity_key
    # (key, value, headers): what the changelog holds, in order, all in partition 0.
    changelog: list[tuple[str, bytes | None, list[tuple[str, bytes]]]] = [
        (key(a, "A"), _record(a, "A", [looks["A"]]), []),
        (key(a, "B"), _record(a, "B", [looks["B"]]), []),
        (key(b, "C"), _record(b, "C", [looks["C"]]), []),
        (key(a, "D"), _record(a, "D", [looks["D"]]), []),
        # B learns a sample, then is seen a day later (the same samples, a later last_seen).
        (key(a, "B"), _record(a, "B", [looks["B"], learned]), []),
        (key(a, "B"), _record(a, "B", [looks["B"], learned], days=1), []),
        # C is erased, then written again after its tombstone: it must stay erased.
        (key(b, "C"), None, []),
        (key(b, "C"), _record(b, "C", [looks["C"]]), []),
        # D is retired (no acknowledgement, no guard), E minted after.
        (key(a, "D"), None, [RETIRED]),
        (key(a, "E"), _record(a, "E", [looks["E"]]), []),
        # A body that does not decode, and one that names another visitor than its key.
        (key(a, "F"), b"{not json", []),
        (key(a, "G"), _record(a, "H", [looks["H"]]), []),
        # A visitor minted, learned, erased, minted again: only the erasure stays.
        (key(b, "H"), _record(b, "H", [looks["H"]]), []),
        (key(b, "H"), _record(b, "H", [looks["H"], _near(looks["H"])]), []),
        (key(b, "H"), None, []),
        (key(b, "H"), _record(b, "H", [looks["H"]]), []),
        (key(a, "G"), _record(a, "G", [looks["G"]]), []),
    ]
    by_record_erased: list[str] = []
    by_record = _shards(pipeline, "by-record", by_record_erased)
    closing.append(by_record)
    by_record.start(timeout=20)
    by_record.own([0], timeout=20)

    producer = make_producer(pipeline)
    skipped_before = (_skipped("visitor", "not_json"), _skipped("visitor", "key_mismatch"))
    try:
        for k, value, headers in changelog:
            producer.send(
                pipeline.topics.identities, value, k.encode(), headers=headers, partition=0
            ).get(timeout=20)
            _wait(by_record.poll, 1)
    finally:
        producer.close()
    skipped_live = (_skipped("visitor", "not_json"), _skipped("visitor", "key_mismatch"))
    assert skipped_live == (skipped_before[0] + 1, skipped_before[1] + 1)

    bulk_erased: list[str] = []
    bulk = _shards(pipeline, "bulk", bulk_erased)
    closing.append(bulk)
    bulk.start(timeout=20)
    bulk.own([0], timeout=20)

    # The same skips were counted again, once each.
    assert (_skipped("visitor", "not_json"), _skipped("visitor", "key_mismatch")) == (
        skipped_live[0] + 1,
        skipped_live[1] + 1,
    )
    assert bulk_erased == by_record_erased == [key(b, "C"), key(b, "H")]
    assert bulk.stores() == by_record.stores() == sorted(STORES)
    assert bulk.visitors == by_record.visitors == 4  # A, B, E, G
    for store, face in [(a, "A"), (a, "B"), (a, "E"), (a, "G")]:
        assert bulk.record(store, face) == by_record.record(store, face)
        assert bulk.sample_count(store, face) == by_record.sample_count(store, face)
    assert bulk.sample_count(a, "B") == 2
    assert bulk.record(a, "B").seen == T0 + timedelta(days=1)
    for store, face in [(b, "C"), (a, "D"), (a, "F"), (b, "H")]:
        assert bulk.sample_count(store, face) == by_record.sample_count(store, face) == 0
    assert bulk.erased(b, "C") and bulk.erased(b, "H") and not bulk.erased(a, "D")
    resurrected = [(key(b, "C"), 0), (key(b, "H"), 0)]
    assert bulk.take_resurrected() == by_record.take_resurrected() == resurrected
    probes = [(store, _near(v)) for store in STORES for v in [*looks.values(), learned]]
    probes += [(store, _unit()) for store in STORES]  # strangers
    answers = [bulk.identify(store, v) for store, v in probes]
    assert answers == [by_record.identify(store, v) for store, v in probes]
    assert {m.face_id for m in answers if m is not None} == {"A", "B", "E", "G"}

    # The matcher that took over serves on: it mints, learns, and follows new tombstones.
    new = _record(a, "N", [looks["H"]])
    bulk.mint(0, IdentityRecord.read(new))
    match = bulk.identify(a, _near(looks["H"]))
    assert match is not None and match.face_id == "N"
    taught = bulk.learn(a, "A", "A-obs-later", _near(looks["A"]), T0 + timedelta(days=2))
    assert taught.learned_from == ["A-obs0", "A-obs-later"]
    assert bulk.sample_count(a, "A") == 2
    producer = make_producer(pipeline)
    try:
        e_key = key(a, "E").encode()
        producer.send(pipeline.topics.identities, None, e_key, partition=0).get(timeout=20)
    finally:
        producer.close()
    _wait(bulk.poll, 1)
    assert bulk.identify(a, _near(looks["E"])) is None
    assert bulk.visitors == 4  # A, B, G and N


def test_the_member_tier_read_in_bulk_is_the_one_built_record_by_record(
    pipeline: PipelineSettings, closing: list[Any]
) -> None:
    topics = pipeline.topics
    faces = {m: [_unit(), _unit()] for m in ("m1", "m2", "m3", "m4")}

    def member(member_id: str, vectors: list[NDArray[np.float32]], name: str = "") -> bytes:
        return MemberRecord(
            member_id=member_id,
            name=name,
            encodings=[vector_to_wire(v) for v in vectors],
            enrolled_at=T0,
            model_version=MODEL,
        ).to_bytes()

    def samples(member_id: str, vectors: list[NDArray[np.float32]]) -> bytes:
        return MemberSamples(
            member_id=member_id,
            model_version=MODEL,
            encodings=[vector_to_wire(v) for v in vectors],
            learned_from=[f"{member_id}-obs{i}" for i in range(len(vectors))],
            learned_at=T0,
        ).to_bytes()

    m1_learned = _near(faces["m1"][0])
    m3_new = [_unit()]
    # (topic, key, value), in the order written.
    changelog: list[tuple[str, str, bytes | None]] = [
        (topics.members, "m1", member("m1", faces["m1"])),
        (topics.member_samples, "m1", samples("m1", [m1_learned])),
        (topics.members, "m2", member("m2", faces["m2"])),
        (topics.members, "m3", member("m3", faces["m3"])),
        # m3 re-enrolled (a record replaces the enrolled set), m2 erased and enrolled again.
        (topics.members, "m3", member("m3", m3_new, name="Three")),
        (topics.members, "m2", None),
        (topics.members, "m2", member("m2", faces["m2"][:1])),
        # m4 enrolled, erased; a record that does not decode and one keyed by another member.
        (topics.members, "m4", member("m4", faces["m4"])),
        (topics.members, "m4", None),
        (topics.members, "m5", b"[]"),
        (topics.members, "m6", member("m1", faces["m1"])),
        (topics.member_samples, "m1", samples("m1", [m1_learned, _near(faces["m1"][1])])),
    ]

    def tier(name: str) -> MemberTier:
        made = MemberTier(
            kafka=pipeline,
            topic=topics.members,
            config=GalleryConfig(),
            on_erased=lambda _member: None,
            client_id=f"takeover-{name}",
            samples_topic=topics.member_samples,
            model_version=MODEL,
        )
        closing.append(made)
        return made

    by_record = tier("by-record")
    by_record.start(timeout=20)
    producer = make_producer(pipeline)
    try:
        for topic, k, value in changelog:
            producer.send(topic, value, k.encode()).get(timeout=20)
            _wait(by_record.poll, 1)
    finally:
        producer.close()
    bulk = tier("bulk")
    assert bulk.start(timeout=20) == len(changelog)

    assert [i.id for i in bulk.gallery.identities()] == ["m1", "m2", "m3"]
    for m in ("m1", "m2", "m3"):
        assert np.array_equal(bulk.gallery.samples(m), by_record.gallery.samples(m))
        assert bulk.learned_count(m) == by_record.learned_count(m)
    assert bulk.learned_count("m1") == 2 and len(bulk.gallery.samples("m1")) == 4
    assert bulk.gallery.identity("m3").name == "Three"
    assert bulk.taught("m1-obs1") == by_record.taught("m1-obs1") == "m1"
    probes = [_near(v) for vectors in faces.values() for v in vectors]
    probes += [_near(m1_learned), _near(m3_new[0]), _unit()]
    decided = [bulk.identify(v) for v in probes]
    assert decided == [by_record.identify(v) for v in probes]
    assert {d.identity.id for d in decided if d.identity is not None} == {"m1", "m2", "m3"}

    # It serves on: a learned sample goes into the gallery at once.
    bulk.learn("m2", "m2-seen", _near(faces["m2"][1]), T0)
    assert len(bulk.gallery.samples("m2")) == 2
