"""The FaceIds this matcher has seen tombstoned on ``identities.v1``, and those written again
after their tombstone.

A FaceId is derived from the observation that minted it, so nothing may legitimately write its
key after an erasure. Two things still can: a matcher that learned a sample for the visitor
while the tombstone was on its way (the record lands after the tombstone, carrying every sample,
the minting one included), and a replay of the minting observation. Either would undo the
erasure once compaction keeps only the latest record, so such a record is not applied and the
owner of the partition writes the tombstone again.
"""

from __future__ import annotations

from typing import Final

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

    def in_partition(self, partition: int) -> list[tuple[str, int]]:
        """``(key, offset)`` of the tombstones remembered in ``partition``, oldest first."""
        return [(key, at[1]) for key, at in self._at.items() if at[0] == partition]

    def again_in(self, partition: int) -> list[str]:
        """Keys of ``partition`` written after their tombstone and not yet taken."""
        return [key for key, p in self._again.items() if p == partition]

    def restore(self, partition: int, tombstones: list[tuple[str, int]], again: list[str]) -> None:
        """What :meth:`in_partition` and :meth:`again_in` said of ``partition`` (a snapshot
        taken over): as if its tombstones and late records had been read here."""
        for key, offset in tombstones:
            self.tombstoned(key, partition, offset)
        for key in again:
            self._again[key] = partition
