"""The erasure's list of decisions, as a tombstone header (:data:`schemas.keys.DECIDED`)."""

from __future__ import annotations

import pytest

from facestream.schemas.keys import (
    DECIDED,
    MAX_DECIDED_BYTES,
    RETIRED,
    decided_header,
    decided_in,
)


def test_the_decisions_round_trip_through_the_header() -> None:
    decided = [("cam-1:f9:0", "new"), ("cam-2:f3:1", "returning"), ("c:1:0", "member")]
    header = decided_header(decided)
    assert header[0] == DECIDED
    assert decided_in([RETIRED, header]) == decided
    assert decided_in([RETIRED]) == decided_in(None) == []


@pytest.mark.parametrize(
    "value",
    [b"not json", b"\xff\xfe", b'{"a": 1}', b'[["only-one"]]', b"[[1, 2]]", b'"text"'],
)
def test_a_header_that_does_not_parse_lists_nothing(value: bytes) -> None:
    """It is advice to the matchers: a bad one is ignored, never a reason to stop reading."""
    assert decided_in([(DECIDED, value)]) == []


def test_a_header_keeps_the_latest_decisions_that_fit() -> None:
    """Longest observation ids: about 6,000 fit; the oldest are left out first."""
    longest = [(f"{i:06d}" + "x" * 134, "returning") for i in range(10_000)]
    name, value = decided_header(longest)
    assert len(value) <= MAX_DECIDED_BYTES
    listed = decided_in([(name, value)])
    assert 5_000 < len(listed) < 10_000
    assert listed == longest[-len(listed) :]
