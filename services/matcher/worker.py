"""The matcher stage: decide who each face on ``encodings.v1`` is, one match event per face.

Per face (see docs/architecture.md, "Deciding who a face is"): members first (replicated tier,
:mod:`facestream.services.matcher.member_tier`), then the store's visitor shard with its neighbours'
replicas (:mod:`.shards`), else a new FaceId derived from the observation id,
added to the shard and written to ``identities.v1`` in the partition the observation came from.

Replays are idempotent: ids are derived from the observation id, and an observation whose FaceId
is already in the shard (rebuilt from the changelog after a crash, or minted earlier in a batch
that is being retried) is re-emitted as the same "new" event with the same identity record,
rather than taken for a returning visitor of itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import redis
from kafka.structs import TopicPartition

from facestream.core.gallery import GalleryConfig
from facestream.runtime import metrics as runtime_metrics
from facestream.runtime.logs import add_log_context
from facestream.runtime.runner import Fatal, Handler, KafkaRecord, Output, Poison, where
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import FaceObservation, IdentityRecord, MatchEvent, decode, derived_id
from facestream.schemas.keys import identity_key, partition_for
from facestream.services.matcher import metrics
from facestream.services.matcher.changelog import ChangelogError
from facestream.services.matcher.member_tier import MemberTier
from facestream.services.matcher.presence import Presence
from facestream.services.matcher.settings import MatcherSettings
from facestream.services.matcher.shards import VisitorShards

log = logging.getLogger(__name__)

Kind = Literal["member", "returning", "new"]


class ShardUnavailable(Fatal):
    """A record arrived for a partition whose shard is not built.

    Fatal: this is no fault of the record. The process must stop (and be restarted, which
    rebuilds the shard) rather than decide without the store's visitors or dead-letter good
    input."""


class MatcherHandler(Handler):
    """The matcher's logic; :meth:`start` before the runner polls, :meth:`close` after."""

    stage = "matcher"

    def __init__(
        self,
        settings: MatcherSettings,
        pipeline: PipelineSettings,
        *,
        redis_client: redis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.topics = pipeline.topics
        self.presence = Presence(
            redis_client or redis.Redis.from_url(pipeline.redis_url),
            pipeline.redis_prefix,
            settings.matcher_id,
            settings.heartbeat_seconds,
        )
        client = f"{pipeline.group('matcher')}-{settings.matcher_id}"
        self.members = MemberTier(
            bootstrap=pipeline.kafka_bootstrap,
            topic=self.topics.members,
            config=GalleryConfig(
                index=settings.index, threshold=settings.threshold, margin=settings.margin
            ),
            on_erased=self.presence.ack,
            client_id=f"{client}-members",
        )
        self.shards = VisitorShards(
            bootstrap=pipeline.kafka_bootstrap,
            topic=self.topics.identities,
            config=GalleryConfig(
                index=settings.index,
                threshold=settings.visitor_threshold,
                margin=settings.visitor_margin,
            ),
            neighbours=settings.neighbours,
            on_erased=self.presence.ack,
            client_id=f"{client}-identities",
        )
        self._checked_stores: set[str] = set()
        self._pending: set[int] = set()
        """Assigned encodings partitions whose shards are not built yet."""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Read every member and start following identities.v1, then announce this matcher.

        Raises :class:`~.changelog.ChangelogError` when the topics cannot be
        read in ``startup_timeout``: a matcher without its members would take them for
        strangers and mint FaceIds for them."""
        # Follow identities first: a tombstone produced after the heartbeat must be seen.
        self.shards.start(self.settings.startup_timeout)
        encodings = self.shards.reader.consumer.partitions_for_topic(self.topics.encodings)
        if encodings is not None and len(encodings) != self.shards.partitions:
            # Shards follow encodings partitions one to one; any other count mixes stores.
            raise ChangelogError(
                f"{self.topics.encodings} has {len(encodings)} partitions but "
                f"{self.topics.identities} has {self.shards.partitions}; they must be equal"
            )
        self.members.start(self.settings.startup_timeout)
        self.presence.tick(force=True)
        log.info("matcher %s ready", self.settings.matcher_id)

    def close(self) -> None:
        self.presence.leave()
        self.members.close()
        self.shards.close()

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        # Only noted here: kafka-python runs rebalance listeners on the consumer's network
        # loop, and a changelog read there would stall the group heartbeats. The shards are
        # built in idle(), which the runner calls after the poll and before handling its batch
        # (and by handle() itself, should a record come first).
        self._pending |= {tp.partition for tp in partitions if tp.topic == self.topics.encodings}

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions if tp.topic == self.topics.encodings}
        self._pending -= gone
        self.shards.release(gone)

    def _build_pending(self) -> None:
        """Build the shards of newly assigned partitions (raises ChangelogError on timeout)."""
        if self._pending:
            self.shards.own(self._pending, self.settings.startup_timeout)
            self._pending.clear()

    def idle(self) -> None:
        """Between polls (and so before every batch): build newly assigned shards, apply
        member and identity changes, acknowledge erasures, heartbeat. A shard that cannot be
        built stops the runner (the exception leaves run()): a restart rebuilds it."""
        self._build_pending()
        self.members.poll()
        self.shards.poll()
        self.presence.tick()

    # -- one face ----------------------------------------------------------------------------

    def handle(self, record: KafkaRecord) -> Sequence[Output]:
        """One observation in, its match event out (plus an identity record when minted)."""
        obs = decode(FaceObservation, record.value)
        add_log_context(store=obs.store_id, camera=obs.camera_id)
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        if key != obs.store_id:
            # The key decides the partition, and so which matcher owns the store's visitors.
            raise Poison("key_mismatch", f"key {key!r} but the observation is of {obs.store_id}")
        if not self.shards.ready(record.partition):
            try:
                self._build_pending()
            except ChangelogError as exc:
                raise ShardUnavailable(f"{where(record)}: {exc}") from exc
            if not self.shards.ready(record.partition):
                raise ShardUnavailable(
                    f"{where(record)}: partition {record.partition} is not assigned"
                )
        self._check_partitioner(obs.store_id, record.partition)
        outputs = self._decide(obs, record.partition)
        delay = (datetime.now(UTC) - obs.captured_at).total_seconds()
        runtime_metrics.EVENT_DELAY.labels(self.stage).observe(max(0.0, delay))
        return outputs

    def _decide(self, obs: FaceObservation, partition: int) -> list[Output]:
        # Log lines here carry the record's place, store and camera (the runner's log context).
        vector = obs.vector

        minted = self.shards.minted_from(obs.store_id, obs.observation_id)
        if minted is not None:
            metrics.DECISIONS.labels("replayed").inc()
            log.info("%s replayed, re-emitting new %s", obs.observation_id, minted)
            return self._new(obs, minted, partition)

        member = self.members.identify(vector)
        if member.identity is not None:
            metrics.DECISIONS.labels("member").inc()
            event = self._event(
                obs,
                "member",
                member_id=member.identity.id,
                distance=member.distance,
                margin=member.margin,
            )
            return [self._match(obs, event)]

        visitor = self.shards.identify(obs.store_id, vector)
        if visitor is not None:
            metrics.DECISIONS.labels("returning").inc()
            event = self._event(
                obs,
                "returning",
                face_id=visitor.face_id,
                matched_store_id=visitor.store_id,
                distance=visitor.distance,
                margin=visitor.margin,
            )
            return [self._match(obs, event)]

        face_id = derived_id("face", obs.observation_id)
        self.shards.mint(obs.store_id, partition, face_id, obs.observation_id, vector)
        metrics.DECISIONS.labels("new").inc()
        log.debug("minted %s from %s", face_id, obs.observation_id)
        return self._new(obs, face_id, partition)

    def _new(self, obs: FaceObservation, face_id: str, partition: int) -> list[Output]:
        """The identity record and the 'new' event; the same bytes on every replay (no field
        depends on the state of the shard)."""
        identity = IdentityRecord(
            face_id=face_id,
            store_id=obs.store_id,
            encoding=obs.encoding,
            first_seen=obs.captured_at,
            observation_id=obs.observation_id,
        )
        changelog = Output(
            self.topics.identities,
            identity.to_bytes(),
            identity_key(obs.store_id, face_id).encode(),
            # The partition the store's observations arrive on: its owner rebuilds from it.
            partition=partition,
            kind="identity",
        )
        event = self._event(obs, "new", face_id=face_id, matched_store_id=None)
        return [changelog, self._match(obs, event)]

    def _event(self, obs: FaceObservation, kind: Kind, **fields: Any) -> MatchEvent:
        return MatchEvent(
            event_id=derived_id("match", obs.observation_id),
            kind=kind,
            store_id=obs.store_id,
            camera_id=obs.camera_id,
            captured_at=obs.captured_at,
            frame_id=obs.frame_id,
            observation_id=obs.observation_id,
            box=obs.box,
            model_version=obs.model_version,
            **fields,
        )

    def _match(self, obs: FaceObservation, event: MatchEvent) -> Output:
        return Output(self.topics.matches, event.to_bytes(), obs.store_id.encode(), kind="match")

    def _check_partitioner(self, store_id: str, partition: int) -> None:
        """Warn once per store when its records are not where murmur2 puts them: neighbour
        replicas of that store would be read from the wrong partition."""
        if store_id in self._checked_stores or not self.shards.partitions:
            return
        self._checked_stores.add(store_id)
        expected = partition_for(store_id, self.shards.partitions)
        if expected != partition:
            metrics.PARTITIONER_MISMATCH.inc()
            log.warning(
                "store %s arrives on partition %d, murmur2 says %d: its producer uses another "
                "partitioner, so neighbour replicas of this store are looked up in the wrong place",
                store_id,
                partition,
                expected,
            )
