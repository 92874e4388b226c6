"""The pure parts of learning visitors, without a broker: a store shard's records, and the
memory of erased FaceIds. Encodings of real photos (Tom Ridge, as in test_learning)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from facestream.core.engine import MODEL_VERSION, Encoding, FaceEngine
from facestream.core.gallery import GalleryConfig
from facestream.schemas import IdentityRecord, vector_to_wire
from facestream.services.matcher.erased import ErasedKeys
from facestream.services.matcher.visitors import LAST_SEEN_STEP, SampleSource, StoreShard
from tests.services.matcher.test_matcher import T0


@pytest.fixture(scope="module")
def two_looks(engine: FaceEngine, lfw: Path) -> tuple[Encoding, Encoding]:
    found = []
    for name in ("Tom_Ridge_0011.jpg", "Tom_Ridge_0014.jpg"):
        [face] = [f for f in engine.faces_in(lfw / "Tom_Ridge" / name) if f.encoding is not None]
        assert face.encoding is not None
        found.append(face.encoding)
    return found[0], found[1]


def test_a_record_is_the_visitor_s_whole_state(two_looks: tuple[Encoding, Encoding]) -> None:
    a, b = two_looks
    shard = StoreShard(GalleryConfig(), "s1", 2)
    minted = IdentityRecord.minted(
        face_id="F", store_id="s1", encoding=vector_to_wire(a), first_seen=T0, observation_id="a:0"
    )
    assert shard.apply(minted)
    learned = shard.learn("F", "b:0", b, T0)
    assert learned.learned_from == ["a:0", "b:0"]
    assert learned.encodings == [vector_to_wire(a), vector_to_wire(b)]
    assert shard.source_of("b:0") == SampleSource("F", 1)
    assert (shard.samples, shard.sample_count("F")) == (2, 2)

    # Its own records read back (older or current) change nothing.
    assert not shard.apply(minted)
    assert not shard.apply(learned)
    # A record with a sample not held replaces the visitor: the changelog is the truth.
    other = IdentityRecord.minted(
        face_id="F", store_id="s1", encoding=vector_to_wire(b), first_seen=T0, observation_id="x:0"
    )
    assert shard.apply(other)
    # What the shard writes names its encoder, also for a record that named none.
    assert shard.record("F") == other.model_copy(update={"model_version": MODEL_VERSION})
    assert shard.source_of("a:0") is None and shard.source_of("x:0") == SampleSource("F", 0)

    assert shard.remove("F") and not shard.remove("F")
    assert (len(shard), shard.samples, shard.source_of("x:0")) == (0, 0, None)


def test_only_records_after_a_tombstone_are_resurrections() -> None:
    erased = ErasedKeys(limit=2)
    erased.tombstoned("s1/F", 1, 10)
    assert "s1/F" in erased
    assert not erased.written_after("s1/F", 1, 9)  # before the tombstone: erased by it
    assert not erased.written_after("s1/G", 1, 11)  # never erased
    assert erased.written_after("s1/F", 1, 11)
    assert erased.take({0}) == []  # not this matcher's partition
    assert erased.take({1}) == [("s1/F", 1)]
    assert erased.take({1}) == []  # once
    erased.tombstoned("s1/G", 1, 12)
    erased.tombstoned("s1/H", 1, 13)
    assert "s1/F" not in erased  # the oldest is forgotten past the limit


def test_last_seen_moves_in_steps_and_the_longest_unseen_expire_first(
    two_looks: tuple[Encoding, Encoding],
) -> None:
    a, b = two_looks
    day = timedelta(days=1)
    shard = StoreShard(GalleryConfig(), "s1", 0)
    for face_id, vector, at in (("F", a, T0), ("G", b, T0 + day)):
        shard.apply(
            IdentityRecord.minted(
                face_id=face_id,
                store_id="s1",
                encoding=vector_to_wire(vector),
                first_seen=at,
                observation_id=f"{face_id}:0",
            )
        )
    assert shard.clock == T0 + day
    # Within a step of the recorded last_seen a sighting writes nothing; a step on, it does.
    assert shard.sighted("F", T0 + LAST_SEEN_STEP - timedelta(seconds=1)) is None
    assert shard.record("F").last_seen == T0
    refreshed = shard.sighted("F", T0 + 2 * day)
    assert refreshed is not None and refreshed.last_seen == T0 + 2 * day
    assert refreshed == shard.record("F") and refreshed.first_seen == T0
    assert shard.clock == T0 + 2 * day

    # G (last seen day 1) is now the longest unseen; F's stale heap entry (day 0) is skipped.
    assert shard.expired(T0 + day, limit=10) == []
    assert shard.expired(T0 + 3 * day, limit=1) == ["G"]
    shard.remove("G")
    assert shard.expired(T0 + 3 * day, limit=10) == ["F"]

    # A rebuild reads last_seen from the record: the same samples, seen later, move it.
    rebuilt = StoreShard(GalleryConfig(), "s1", 0)
    assert rebuilt.apply(
        IdentityRecord.read(refreshed.model_copy(update={"last_seen": None}).to_bytes())
    )
    assert not rebuilt.apply(refreshed)
    assert rebuilt.record("F") == refreshed
    assert rebuilt.expired(T0 + 2 * day, limit=10) == []
    assert rebuilt.expired(T0 + 2 * day + timedelta(seconds=1), limit=10) == ["F"]
