"""The keys that place messages on the topics, and the partition a key lands on.

They define the topics as much as the message models do: ``encodings.v1`` and ``matches.v1``
are keyed by store id, ``identities.v1`` by ``store/face_id`` and written explicitly to the
partition that the store id maps to in ``encodings.v1`` (same partition count, same hash), so
the matcher that owns a store's observations also owns its FaceIds.
"""

from __future__ import annotations

from kafka.partitioner.default import murmur2


def partition_for(store_id: str, partitions: int) -> int:
    """The partition that kafka-python's default partitioner (murmur2, as the Java client's)
    gives the key ``store_id`` in a topic of ``partitions`` partitions."""
    return int((murmur2(store_id.encode()) & 0x7FFFFFFF) % partitions)


def identity_key(store_id: str, face_id: str) -> str:
    """The ``identities.v1`` key of an anonymous FaceId: ``store/face_id``."""
    return f"{store_id}/{face_id}"


def split_identity_key(key: str) -> tuple[str, str] | None:
    """``(store, face_id)`` of an identities.v1 key, or None when it is not one."""
    store, sep, face_id = key.partition("/")
    return (store, face_id) if sep and store and face_id else None
