"""The keys that place messages on the topics, and the partition a key lands on.

They define the topics as much as the message models do: ``frames.v1`` is keyed by store id,
or (opt-in) by ``store/camera``, so that each camera's frames stay in order on one detector
while a store's cameras spread over all of them;
``encodings.v1`` and ``matches.v1`` are keyed by store id; ``identities.v1`` by
``store/face_id`` and written explicitly to the partition that the store id maps to in
``encodings.v1`` (same partition count, same hash), so the matcher that owns a store's
observations also owns its FaceIds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from kafka.partitioner.default import murmur2

if TYPE_CHECKING:
    from facestream.schemas.messages import CameraProgress

RETIRED: Final = ("facestream-tombstone", b"retired")
"""The header of an ``identities.v1`` tombstone that retires a visitor unseen for the retention
period, rather than erasing one on request: it needs no acknowledgement from the matchers, and
nothing guards the key against being written again (a retired FaceId is never minted again)."""


PROGRESS: Final = ("facestream-kind", b"progress")
"""The header of an ``encodings.v1`` record that is a detector's
:class:`~facestream.schemas.CameraProgress`, not a face: the matcher tells them apart by it."""


def is_progress(headers: list[tuple[str, bytes]] | None) -> bool:
    """Whether an ``encodings.v1`` record with these headers is a camera's progress."""
    return PROGRESS in (headers or [])


def progress_key(progress: CameraProgress) -> bytes:
    """The ``encodings.v1`` key of a camera's progress: its store's, as its observations'."""
    return progress.store_id.encode()


def is_retirement(headers: list[tuple[str, bytes]] | None) -> bool:
    """Whether a tombstone with these headers retires a visitor (see :data:`RETIRED`)."""
    return RETIRED in (headers or [])


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
