"""Batched matching (issue 7, item 1) on the real broker, with encodings of LFW photos: a
matcher handed the whole poll batch first (``prepare``: one search per gallery for all of its
faces) decides exactly as one that searches face by face, including a stranger minted early in
the batch and recognised later in it, a member, a neighbour store and an invalid record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facestream.core.engine import Encoding
from facestream.core.gallery import Gallery
from facestream.runtime.runner import Poison, Record, poison_reason
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import MatchEvent, MemberRecord, SchemaError, decode, derived_id
from facestream.services.matcher.worker import MatcherHandler
from tests.services.matcher.test_matcher import (
    PEOPLE,
    T0,
    clean_redis,
    encode_people,
    make_handler,
    observation,
    produce,
    record,
)

__all__ = ["make_handler"]  # a fixture, used by name


@pytest.fixture(autouse=True)
def _redis_keys(pipeline: PipelineSettings) -> Iterator[None]:
    yield
    clean_redis(pipeline)


@pytest.fixture(scope="module")
def faces(lfw: Path) -> dict[str, list[Encoding]]:
    return encode_people(lfw, PEOPLE)


def _searches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every gallery search from now on: (the gallery's id, how many probes it searched)."""
    calls: list[tuple[int, int]] = []
    search = Gallery._search

    def counted(self: Gallery, q: Any, k: int) -> Any:
        calls.append((id(self), len(q)))
        return search(self, q, k)

    monkeypatch.setattr(Gallery, "_search", counted)
    return calls


def _handled(handler: MatcherHandler, batch: list[Record]) -> list[Any]:
    """Each record's outputs, or the Poison's reason when it is dead-lettered."""
    out: list[Any] = []
    for rec in batch:
        try:
            out.append(handler.handle(rec))
        except (Poison, SchemaError) as exc:  # what the runner dead-letters
            reason = poison_reason(exc)
            assert reason is not None
            out.append(("poison", reason[0]))
    return out


def test_a_batch_searched_together_is_decided_as_face_by_face(
    pipeline: PipelineSettings,
    faces: dict[str, list[Encoding]],
    make_handler: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gordon, amber, carl = faces["Gordon_Brown"], faces["Amber_Tamblyn"], faces["Carl_Reiner"]
    member = MemberRecord(member_id="m-gb", encodings=gordon[:2], enrolled_at=T0)
    produce(pipeline, pipeline.topics.members, [(b"m-gb", member.to_bytes())])
    # s2 sees s1's visitors (a neighbour): its faces search both shards.
    neighbours = {"s2": ["s1"]}
    batch = [
        record(pipeline, observation("s1", "a0:0", amber[0]), 1),  # new
        record(pipeline, observation("s1", "g2:0", gordon[2], 5), 2),  # the member
        record(pipeline, observation("s1", "a1:0", amber[1], 60), 3),  # returning: minted at 1
        record(pipeline, observation("s2", "c0:0", carl[0], 70), 4),  # new in s2
        Record(pipeline.topics.encodings, 0, 5, b"s1", b"{not json"),  # dead-lettered
        record(pipeline, observation("s2", "a2:0", amber[1], 80), 6),  # s1's visitor, in s2
        record(pipeline, observation("s2", "c1:0", carl[1], 90), 7),  # returning in s2
    ]

    # Member scales computed as matched (not by the background thread, whose searches would
    # race with the count below).
    alone = make_handler(neighbours=neighbours, member_scales="lazy")
    together = make_handler(neighbours=neighbours, member_scales="lazy")
    searches = _searches(monkeypatch)
    expected = _handled(alone, batch)
    face_by_face = list(searches)
    searches.clear()
    together.prepare(batch)
    got = _handled(together, batch)

    assert got == expected  # every output, byte for byte
    kinds = [
        decode(MatchEvent, outs[-1].value).kind if isinstance(outs, list) else outs for outs in got
    ]
    assert kinds == [
        "new",
        "member",
        "returning",
        "new",
        ("poison", "not_json"),
        "returning",
        "returning",
    ]
    assert decode(MatchEvent, got[2][-1].value).face_id == derived_id("face", "a0:0")
    assert decode(MatchEvent, got[5][-1].value).matched_store_id == "s1"
    # The member gallery does not change in this batch: one search for its six faces, and
    # one of the matched member's own samples (the normalised policy's scale), instead of a
    # search per face and per visitor decision (the members are the visitors' cohort).
    members = id(together.members.gallery)
    assert [n for g, n in searches if g == members] == [6, 2]
    assert len([n for g, n in face_by_face if g == id(alone.members.gallery)]) > 6
    assert len(searches) < len(face_by_face)

    # A second batch, s1's shard no longer empty, so prefetched: Carl, a stranger to s1, is
    # minted by the first face and must be recognised by the second, whose prefetched answer
    # (nobody) was made before the mint.
    second = [
        record(pipeline, observation("s1", "c2:0", carl[0], 200), 8),
        record(pipeline, observation("s1", "c3:0", carl[1], 260), 9),
    ]
    searches.clear()
    expected = _handled(alone, second)
    together.prepare(second)
    assert any(n == 2 for _, n in searches)  # the shard searched for both faces at once
    got = _handled(together, second)
    assert got == expected
    first, again = (decode(MatchEvent, outs[-1].value) for outs in got)
    assert (first.kind, again.kind) == ("new", "returning")
    assert again.face_id == first.face_id == derived_id("face", "c2:0")


def test_an_empty_or_invalid_batch_prepares_nothing(
    pipeline: PipelineSettings, make_handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = make_handler(member_scales="lazy")  # no background thread searching meanwhile
    searches = _searches(monkeypatch)
    handler.prepare([])
    handler.prepare([Record(pipeline.topics.encodings, 0, 1, b"s1", b"[]")])
    assert searches == []
