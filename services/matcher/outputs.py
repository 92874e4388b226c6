"""The records the matcher writes: match events, visitor records and tombstones on
``identities.v1``, and members' learned samples on ``member-samples.v1``. Every field is derived
from the observation or the identity's state, never from the clock or a random source, so a
replay writes the same bytes."""

from __future__ import annotations

from typing import Any, Literal

from facestream.runtime.runner import Output
from facestream.runtime.topics import Topics
from facestream.schemas import (
    FaceObservation,
    IdentityRecord,
    MatchEvent,
    MemberSamples,
    derived_id,
)
from facestream.schemas.keys import RETIRED, identity_key

Kind = Literal["member", "returning", "new"]


class Outputs:
    """Builds the matcher's :class:`Output` records for one set of topics."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    def match(self, obs: FaceObservation, kind: Kind, **fields: Any) -> Output:
        """The match event of ``obs`` (``fields``: member or face id, distance, margin...)."""
        event = MatchEvent(
            event_id=derived_id("match", obs.observation_id),
            kind=kind,
            store_id=obs.store_id,
            camera_id=obs.camera_id,
            captured_at=obs.captured_at,
            frame_id=obs.frame_id,
            observation_id=obs.observation_id,
            box=obs.box,
            model_version=obs.model_version,
            last_seen=obs.last_seen,
            **fields,
        )
        return Output(self.topics.matches, event.to_bytes(), obs.store_id.encode(), kind="match")

    def published(self, obs: FaceObservation, event: bytes) -> Output:
        """A match event published before for ``obs``, again, byte for byte."""
        return Output(self.topics.matches, event, obs.store_id.encode(), kind="match")

    def identity(self, record: IdentityRecord, partition: int) -> Output:
        """A visitor's record, written to ``partition``: the one the store's observations
        arrive on, which its owner rebuilds the store's shard from."""
        return Output(
            self.topics.identities,
            record.to_bytes(),
            identity_key(record.store_id, record.face_id).encode(),
            partition=partition,
            kind="identity",
        )

    def member_samples(self, record: MemberSamples) -> Output:
        """A member's learned samples (all of them), keyed by member id."""
        return Output(
            self.topics.member_samples,
            record.to_bytes(),
            record.member_id.encode(),
            kind="member_samples",
        )

    def tombstone(self, key: str, partition: int) -> Output:
        """A tombstone for the ``identities.v1`` key ``store/face_id``."""
        return Output(
            self.topics.identities, None, key.encode(), partition=partition, kind="tombstone"
        )

    def retirement(self, key: str, partition: int) -> Output:
        """The tombstone that retires a visitor unseen for the retention period: a tombstone
        marked with the :data:`~facestream.schemas.keys.RETIRED` header."""
        return Output(
            self.topics.identities,
            None,
            key.encode(),
            headers=[RETIRED],
            partition=partition,
            kind="retirement",
        )
