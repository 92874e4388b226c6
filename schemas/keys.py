"""The keys that place messages on the topics, and the partition a key lands on.

They define the topics as much as the message models do: ``frames.v1`` is keyed by store id,
or (opt-in) by ``store/camera``, so that each camera's frames stay in order on one detector
while a store's cameras spread over all of them; ``encodings.v1`` and ``matches.v1`` are keyed
by store id; ``identities.v1`` by ``store/face_id`` and written explicitly to the partition
that the store id maps to in ``encodings.v1`` (same partition count, same hash), so the matcher
that owns a store's observations also owns its FaceIds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from kafka.partitioner.default import murmur2

RETIRED: Final = ("facestream-tombstone", b"retired")
"""The header of an ``identities.v1`` tombstone that retires a visitor unseen for the retention
period, rather than erasing one on request: it needs no acknowledgement from the matchers, and
nothing guards the key against being written again (a retired FaceId is never minted again)."""


def is_retirement(headers: list[tuple[str, bytes]] | None) -> bool:
    """Whether a tombstone with these headers retires a visitor (see :data:`RETIRED`)."""
    return RETIRED in (headers or [])


DECIDED: Final = "facestream-decided"
"""The header of an erasure's second tombstone (``facestream erase`` writes it once the matchers
have acknowledged the first): the observations the matchers decided as the erased person, read
from ``matches.v1`` over the reach of a replay of ``encodings.v1``, as a JSON list of
``[observation_id, kind]`` pairs. A matcher that replays one of them must emit its decision
again without deciding anew: a new decision would find nobody (the person is erased) and mint
a FaceId holding the erased person's encoding. Observation ids are not biometric data."""

MAX_DECIDED_BYTES: Final = 900_000
"""Longest :data:`DECIDED` header, under the 1 MB record limit of a broker's defaults: about
20,000 decisions with short observation ids, far more than a member seen at every visit for a
day."""

DecidedKind = tuple[str, str]
"""``(observation_id, kind)``: an observation and the kind of the decision it had."""


def decided_header(decided: Sequence[DecidedKind]) -> tuple[str, bytes]:
    """The :data:`DECIDED` header listing the latest of ``decided`` (in the order given) that
    fit in :data:`MAX_DECIDED_BYTES`; the oldest are left out first."""
    kept: list[str] = []
    size = 2
    for pair in reversed(decided):
        item = json.dumps(list(pair), separators=(",", ":"))
        if size + len(item) + 1 > MAX_DECIDED_BYTES:
            break
        kept.append(item)
        size += len(item) + 1
    return DECIDED, ("[" + ",".join(reversed(kept)) + "]").encode()


def decided_in(headers: list[tuple[str, bytes]] | None) -> list[DecidedKind]:
    """The decisions a tombstone's :data:`DECIDED` header lists; none if it has none, or one
    that does not parse (it is advice to the matchers, never a reason to stop reading)."""
    for name, value in headers or []:
        if name != DECIDED:
            continue
        try:
            pairs = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            return []
        if not isinstance(pairs, list):
            return []
        return [
            (p[0], p[1])
            for p in pairs
            if isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
        ]
    return []


def partition_for(store_id: str, partitions: int) -> int:
    """The partition that kafka-python's default partitioner (murmur2, as the Java client's)
    gives the key ``store_id`` in a topic of ``partitions`` partitions (any other key, such as
    a :func:`frame_key`, lands the same way)."""
    return int((murmur2(store_id.encode()) & 0x7FFFFFFF) % partitions)


def frame_key(store_id: str, camera_id: str) -> str:
    """The ``frames.v1`` key of a camera's frames: ``store/camera``.

    Frames published before cameras were keyed this way carry the store id alone; the detector
    accepts both (docs/deploy.md, "Upgrading to camera keys")."""
    return f"{store_id}/{camera_id}"


def identity_key(store_id: str, face_id: str) -> str:
    """The ``identities.v1`` key of an anonymous FaceId: ``store/face_id``."""
    return f"{store_id}/{face_id}"


def split_identity_key(key: str) -> tuple[str, str] | None:
    """``(store, face_id)`` of an identities.v1 key, or None when it is not one."""
    store, sep, face_id = key.partition("/")
    return (store, face_id) if sep and store and face_id else None
