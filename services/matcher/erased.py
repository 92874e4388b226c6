"""The FaceIds this matcher has seen tombstoned on ``identities.v1``, and those written again
after their tombstone; and the observations decided as people since erased.

A FaceId is derived from the observation that minted it, so nothing may legitimately write its
key after an erasure. Two things still can: a matcher that learned a sample for the visitor
while the tombstone was on its way (the record lands after the tombstone, carrying every sample,
the minting one included), and a replay of the minting observation. Either would undo the
erasure once compaction keeps only the latest record, so such a record is not applied and the
owner of the partition writes the tombstone again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from facestream.schemas.keys import decided_in

MAX_ERASED: Final = 100_000
"""Tombstoned keys remembered (the oldest are forgotten first: by then compaction has long
removed their records and kept the tombstone for its ``delete.retention.ms``, 7 days in
:func:`facestream.runtime.topics.topic_specs`)."""


class ErasedKeys:
    """Tombstoned ``identities.v1`` keys, with the place of the latest tombstone of each."""

    def __init__(self, limit: int = MAX_ERASED) -> None:
        self.limit = limit
        self._at: dict[str, tuple[int, int]] = {}
        self._again: dict[str, int] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._at

    def tombstoned(self, key: str, partition: int, offset: int) -> None:
        """A tombstone of ``key`` was applied (at ``partition``/``offset``)."""
        self._at.pop(key, None)  # re-inserted last, so that the oldest are forgotten first
        self._at[key] = (partition, offset)
        while len(self._at) > self.limit:
            del self._at[next(iter(self._at))]
        self._again.pop(key, None)

    def written_after(self, key: str, partition: int, offset: int) -> bool:
        """Whether a record of ``key`` at ``partition``/``offset`` comes after its tombstone;
        if so it is noted, for :meth:`take` to return once."""
        at = self._at.get(key)
        if at is None or at[0] != partition or at[1] > offset:
            return False
        self._again[key] = partition
        return True

    def take(self, partitions: set[int]) -> list[tuple[str, int]]:
        """``(key, partition)`` of the keys written after their tombstone in ``partitions``,
        each returned once: the caller writes their tombstones again."""
        due = [(key, p) for key, p in self._again.items() if p in partitions]
        for key, _ in due:
            del self._again[key]
        return due


MAX_GUARDED: Final = 200_000
"""Observations remembered as decided about erased people (the oldest are forgotten first: a
replay reaches back only the lifetime of ``encodings.v1``, a day by default)."""


@dataclass(frozen=True)
class Decided:
    """The decision an observation had about a person since erased: what a replay re-emits."""

    kind: str
    """``member``, ``returning`` or ``new``."""
    member_id: str | None = None
    store_id: str | None = None
    """A visitor's store: the one whose shard knew them."""
    face_id: str | None = None


class ErasedDecisions:
    """The observations decided as erased people, from the
    :data:`~facestream.schemas.keys.DECIDED` header of their tombstones (``facestream erase``
    writes it once the matchers acknowledged the erasure, and compaction keeps the tombstone
    for ``delete.retention.ms``: longer than a replay of ``encodings.v1`` reaches back)."""

    def __init__(self, limit: int = MAX_GUARDED) -> None:
        self.limit = limit
        self._by_observation: dict[str, Decided] = {}

    def get(self, observation_id: str) -> Decided | None:
        return self._by_observation.get(observation_id)

    def member(self, member_id: str, headers: list[tuple[str, bytes]] | None) -> None:
        """A member's tombstone with these headers was read."""
        for observation_id, kind in decided_in(headers):
            if kind == "member":
                self._put(observation_id, Decided(kind, member_id=member_id))

    def visitor(self, store_id: str, face_id: str, headers: list[tuple[str, bytes]] | None) -> None:
        """A visitor's tombstone with these headers was read."""
        for observation_id, kind in decided_in(headers):
            if kind in ("returning", "new"):
                self._put(observation_id, Decided(kind, store_id=store_id, face_id=face_id))

    def _put(self, observation_id: str, decided: Decided) -> None:
        self._by_observation.pop(observation_id, None)
        self._by_observation[observation_id] = decided
        while len(self._by_observation) > self.limit:
            del self._by_observation[next(iter(self._by_observation))]
