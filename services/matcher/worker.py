"""The matcher stage: decide who each face on ``encodings.v1`` is, one match event per face.

Per face (see docs/architecture.md, "Deciding who a face is"): members first (replicated tier,
:mod:`.member_tier`), then the store's visitor shard with its neighbours' replicas
(:mod:`.shards`); a confident match teaches the member or visitor a sample (:mod:`.learning`).
Else a new FaceId derived from the observation id, added to the shard. A visitor's record (all
samples) is written to ``identities.v1`` in the partition the observation came from when minted,
taught or seen a day after its recorded ``last_seen``; a member's learned samples to
``member-samples.v1``. Visitors unseen for the retention period are tombstoned before the
decision that finds them so (:mod:`.decide`).

A store's faces are decided in capture order (:mod:`.ordering`): each is held until every camera
of the store has reported progress past it, then decided; the records held are not committed.

Decisions depend on the input, not on timing: before each batch the member tier and the kept
shards are read up to the end offsets of that moment. Replays are idempotent: ids are derived
from the observation id; a batch retried before its outputs were acknowledged gets the outputs
of its first attempt (remembered until acknowledged); and an observation that minted or taught
a visitor found in the shard (read back after a crash) re-emits its event and the visitor's
record, rather than being taken for a returning visitor of itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np
import redis
from kafka.structs import TopicPartition
from numpy.typing import NDArray

from facestream.core.engine import MODEL_VERSION
from facestream.core.gallery import Gallery, GalleryConfig
from facestream.core.policy import PolicySet, load_policies
from facestream.runtime import metrics as runtime_metrics
from facestream.runtime.logs import add_log_context, log_context
from facestream.runtime.redis_clients import redis_client as new_redis_client
from facestream.runtime.runner import Fatal, Handler, KafkaRecord, Output, Poison, where
from facestream.runtime.settings import PipelineSettings
from facestream.runtime.topic_reads import read_to_end
from facestream.schemas import CameraProgress, FaceObservation, SchemaError, decode
from facestream.schemas.keys import is_progress, partition_for
from facestream.services.matcher import metrics
from facestream.services.matcher.changelog import ChangelogError
from facestream.services.matcher.decide import Decider
from facestream.services.matcher.decided import CLOCK_MARGIN_MS, DecisionLog
from facestream.services.matcher.learning import LearnPolicy, MemberLearnPolicy
from facestream.services.matcher.member_tier import MemberTier
from facestream.services.matcher.ordering import CaptureOrder, Held
from facestream.services.matcher.outputs import Outputs
from facestream.services.matcher.presence import Presence
from facestream.services.matcher.settings import MatcherSettings
from facestream.services.matcher.shards import VisitorShards

log = logging.getLogger(__name__)

MAX_UNACKED: Final = 10_000
"""Decisions remembered until acknowledged (a runner clears them every batch)."""

PROGRESS_LOOKBACK: Final = timedelta(minutes=5)
"""How far before a newly assigned partition's first record (its Kafka timestamp) the cameras'
progress is read back: a camera that reported none in that time is not waited for."""


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
        model_version: str = MODEL_VERSION,
    ) -> None:
        self.settings = settings
        self.model_version = model_version
        """The encodings this matcher compares (its members are enrolled with the engine's)."""
        self.topics = pipeline.topics
        self.presence = Presence(
            redis_client or new_redis_client(pipeline),
            pipeline.redis_prefix,
            settings.matcher_id,
            settings.heartbeat_seconds,
        )
        client = f"{pipeline.group('matcher')}-{settings.matcher_id}"
        self.members = MemberTier(
            kafka=pipeline,
            topic=self.topics.members,
            config=GalleryConfig(
                index=settings.index,
                threshold=settings.threshold,
                margin=settings.margin,
                vector_dir=settings.vector_dir,
            ),
            on_erased=self._erased,
            client_id=f"{client}-members",
            samples_topic=self.topics.member_samples if settings.member_max_learned else None,
            model_version=model_version,
        )
        self.shards = VisitorShards(
            kafka=pipeline,
            topic=self.topics.identities,
            config=GalleryConfig(
                index=settings.index,
                threshold=settings.visitor_threshold,
                margin=settings.visitor_margin,
                vector_dir=settings.vector_dir,
            ),
            neighbours=settings.neighbours,
            on_erased=self._erased,
            client_id=f"{client}-identities",
            retention=settings.visitor_retention,
            model_version=model_version,
            snapshots=settings.snapshots,
        )
        self._use_policies(settings)
        self.decider = Decider(
            self.members,
            self.shards,
            LearnPolicy.from_settings(settings),
            Outputs(self.topics),
            MemberLearnPolicy.from_settings(settings),
            store_cohort=settings.member_probe_cohort,
        )
        self.published = DecisionLog(pipeline, self.topics.matches, client_id=f"{client}-decided")
        """Match events already published for observations of the owned partitions."""
        self._published_margin_ms = int(pipeline.max_ahead_seconds * 1000) + CLOCK_MARGIN_MS
        self._checked_stores: set[str] = set()
        self._pending: set[int] = set()
        """Assigned encodings partitions whose shards are not built yet."""
        self._caught_up = False
        """Whether the batch in hand was preceded by a catch-up (reset between polls)."""
        self._unacked: dict[str, list[Output]] = {}
        """Observation id -> outputs, for the batch whose outputs are not acknowledged yet."""
        self.order = CaptureOrder(wait_seconds=settings.order_wait_seconds)
        self._order_saved = self.order.snapshot()
        """The faces held and the cameras' promises as of the last commit (:meth:`rewind`)."""
        self._read_since_due = False
        """Whether a record was handled since the last :meth:`due` (if not, the poll before it
        found nothing: everything is read)."""
        self._pipeline = pipeline
        self._client = client

    def _use_policies(self, settings: MatcherSettings) -> None:
        """Both tiers decide with the normalised policy unless ``policy=distance``."""
        if settings.policy != "normalized":
            return
        policies = load_policies(settings.policy_dir) if settings.policy_dir else PolicySet()
        cohort = [policies.cohort] if policies.cohort is not None else []
        self.members.use_policy(policies.member, cohort)
        # Visitors are normalised against the members (the store's first visitors have no other
        # visitors to be compared with, and the members are the local population), not against
        # the calibration cohort: with it, reference people crowd every visitor's neighbourhood
        # and returning visitors were split (docs/accuracy.md). calibrate fits the visitor
        # threshold the same way (facestream.core.calibration.visitor_errors).
        self.shards.use_policy(policies.visitor, [self.members.gallery])
        log.info(
            "normalised decisions: members %s, visitors %s, cohort %d people",
            policies.member.as_dict(),
            policies.visitor.as_dict(),
            len(policies.cohort) if policies.cohort is not None else 0,
        )

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
        if self.settings.member_scales == "background":
            self.members.fill_scales()
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
        self.published.forget(gone)
        self.order.forget(gone, self._order_saved)
        self._unacked.clear()  # committed by now; the next owner decides anything replayed

    def _build_pending(self) -> None:
        """Build the shards of newly assigned partitions (raises ChangelogError on timeout)."""
        if self._pending:
            self.shards.own(self._pending, self.settings.startup_timeout)
            self._pending.clear()
            # Shards dropped or rebuilt: the member judges made with them go (store_both).
            self.members.keep_store_judges(self.shards.store_galleries())

    def idle(self) -> None:
        """Between polls (and so before every batch): build newly assigned shards, apply
        the member and identity changes fetched so far, acknowledge erasures, heartbeat. A
        shard that cannot be built stops the runner (the exception leaves run()): a restart
        rebuilds it. The full catch-up waits for the batch's first record: an idle matcher
        polls twice a second, and need not ask the broker for end offsets each time."""
        self._build_pending()
        self.members.poll()
        self.shards.poll()
        self.presence.tick()
        self._caught_up = False

    def readiness(self) -> Mapping[str, bool]:
        # Not ready while assigned partitions wait for their shards (built in idle()).
        return {"shards": not self._pending}

    def before_commit(self) -> None:
        # The batch's outputs are acknowledged: its decisions need not be remembered.
        self._unacked.clear()
        self._order_saved = self.order.snapshot()

    def held(self) -> Mapping[int, int]:
        return self.order.held_offsets()

    def rewind(self) -> None:
        # The faces released since the last commit are held again; handled again, they get
        # the outputs remembered for them (_unacked).
        self.order.restore(self._order_saved)

    def due(self) -> Sequence[Output]:
        """The held faces of stores whose cameras went quiet (:meth:`CaptureOrder.due`)."""
        idle, self._read_since_due = not self._read_since_due, False
        released = self.order.due(idle)
        if not released:
            return []
        log.info(
            "%d held faces decided without waiting longer: a camera of their store reported no "
            "progress for %.0f s, or the store's first wait ended (stores %s)",
            len(released),
            self.settings.order_wait_seconds,
            ", ".join(sorted({face.observation.store_id for face in released})),
        )
        self._catch_up_once()
        outputs: list[Output] = []
        for face in released:
            with log_context(where(face.record)):
                outputs += self._decide(face.record, face.observation)
        return outputs

    def _erased(self, subject: str) -> None:
        # A decision remembered for a retry may name the erased person: decide it again.
        self._unacked.clear()
        self.presence.ack(subject)

    def _catch_up_once(self) -> None:
        """:meth:`_catch_up`, once per batch (idle() runs between polls and resets it)."""
        if not self._caught_up:
            self._catch_up()
            self._caught_up = True

    def _catch_up(self) -> None:
        """Read members.v1 and the kept partitions of identities.v1 up to their end offsets of
        now. The zero-wait polls of idle() return what the consumer happened to have fetched:
        a member published just before the frames could be missing from the first decisions,
        and whether it was depended on timing. Past the timeout the batch is decided anyway
        (counted): a slow changelog must not stop matching."""
        timeout = self.settings.catch_up_timeout
        for tier, catch_up in (
            ("member", self.members.catch_up),
            ("visitor", self.shards.catch_up),
        ):
            try:
                applied = catch_up(timeout)
            except ChangelogError as exc:
                metrics.CATCH_UP_TIMEOUTS.labels(tier).inc()
                log.warning("deciding the batch without all %s updates: %s", tier, exc)
                continue
            if applied:
                metrics.CAUGHT_UP.labels(tier).inc(applied)
                log.info("caught up on %d %s record(s) before the batch", applied, tier)

    # -- a batch, then one face at a time ----------------------------------------------------

    def prepare(self, records: Sequence[KafkaRecord]) -> None:
        """Search every gallery the batch's faces will be decided against once, for all of
        them (:meth:`Gallery.prefetch`), after the catch-up that :meth:`handle` would do first.
        The faces are still decided one at a time, in order, by :meth:`handle`: a gallery a
        decision changes (a visitor minted, a sample learned, a visitor retired) searches
        afresh for the faces after it, so the decisions are exactly those made without this
        (``tests/services/matcher/test_batches.py``). Invalid records are left to handle()."""
        try:
            self._build_pending()  # as handle() would first (idle() has, between polls)
        except ChangelogError:
            return  # handle() raises it for the first record, as without prepare
        faces: list[tuple[FaceObservation, NDArray[np.float32]]] = []
        for record in records:
            try:
                obs = decode(FaceObservation, record.value)
            except SchemaError:
                continue
            if obs.model_version == self.model_version and self.shards.ready(record.partition):
                faces.append((obs, obs.vector))
        if not faces:
            return
        self._catch_up_once()
        wanted: dict[int, tuple[Gallery, dict[str, NDArray[np.float32]]]] = {}
        for obs, vector in faces:
            searched = (*self.members.galleries(), *self.shards.galleries_for(obs.store_id))
            for gallery in searched:
                wanted.setdefault(id(gallery), (gallery, {}))[1][obs.observation_id] = vector
        for gallery, vectors in wanted.values():
            if len(gallery):
                gallery.prefetch(np.stack(list(vectors.values())))
        metrics.BATCH_FACES.observe(len(faces))

    # -- one face ----------------------------------------------------------------------------

    def handle(self, record: KafkaRecord) -> Sequence[Output]:
        """One observation in, its match event out (plus the visitor's record when one was
        minted or learned a sample); in capture order, the outputs of the faces this record
        lets through (none while it is held; several when a camera's progress releases them)."""
        self._read_since_due = True
        if is_progress(record.headers):
            return self._progress(record)
        obs = decode(FaceObservation, record.value)
        add_log_context(store=obs.store_id, camera=obs.camera_id)
        _check_key(record, obs.store_id, "observation")
        if obs.model_version != self.model_version:
            # Distances between encodings of two models mean nothing: never compare them.
            raise Poison(
                "model_mismatch",
                f"an encoding of {obs.model_version!r}; this matcher's are {self.model_version!r}",
            )
        self._ready(record)
        if self.settings.order == "arrival":
            return self._decide(record, obs)
        return self._decide_all(self.order.face(record, obs))

    def _progress(self, record: KafkaRecord) -> Sequence[Output]:
        """A camera's progress: the faces it lets through."""
        progress = CameraProgress.read(record.value)
        add_log_context(store=progress.store_id, camera=progress.camera_id)
        _check_key(record, progress.store_id, "progress")
        self._ready(record)
        return self._decide_all(self.order.progress(record, progress))

    def _decide_all(self, faces: Sequence[Held]) -> list[Output]:
        outputs: list[Output] = []
        for face in faces:
            outputs += self._decide(face.record, face.observation)
        return outputs

    def _ready(self, record: KafkaRecord) -> None:
        """The record's shard built, the changelogs caught up for the batch, and the cameras'
        promises read back on the partition's first record since it was assigned."""
        if not self.shards.ready(record.partition):
            try:
                self._build_pending()
            except ChangelogError as exc:
                raise ShardUnavailable(f"{where(record)}: {exc}") from exc
            if not self.shards.ready(record.partition):
                raise ShardUnavailable(
                    f"{where(record)}: partition {record.partition} is not assigned"
                )
        self._catch_up_once()
        if self.settings.order == "capture" and self.order.needs_load(record.partition):
            self._load_progress(record)

    def _load_progress(self, record: KafkaRecord) -> None:
        """The promises made on the record's partition before it (from a little before its
        time): those a matcher that had handled them would hold (raises the read's error:
        the batch is retried, not decided without them)."""
        since = record.timestamp - int(PROGRESS_LOOKBACK.total_seconds() * 1000)
        found = read_to_end(
            self._pipeline,
            record.topic,
            lambda r: is_progress(r.headers),
            self.settings.startup_timeout,
            lambda _: [record.partition],
            since_ms=max(0, since),
            client_id=f"{self._client}-progress",
            before=record.offset,
        )
        progress = []
        for one in found:
            try:
                progress.append((CameraProgress.read(one.value), int(one.timestamp)))
            except SchemaError:
                continue  # dead-lettered when it was handled
        self.order.load(record.partition, progress)
        metrics.PROGRESS_READ.inc(len(progress))
        log.info(
            "partition %d: %d camera progress records read back", record.partition, len(progress)
        )

    def _decide(self, record: KafkaRecord, obs: FaceObservation) -> list[Output]:
        """Decide one face (its shard ready, the changelogs caught up)."""
        self._check_partitioner(obs.store_id, record.partition)
        outputs = self._unacked.get(obs.observation_id)
        if outputs is not None:
            # Handled again before its outputs were acknowledged (a retried batch): the same
            # outputs, decided on the state the first attempt saw, not on what it changed.
            metrics.DECISIONS.labels("replayed").inc()
        else:
            published = self._published_before(obs, record.partition)
            outputs = [
                *self.decider.tombstones_again(),
                *self.decider.decide(obs, record.partition, published),
            ]
            event = outputs[-1]  # every decision ends with its match event
            if event.kind == "match" and event.value is not None:
                self.published.remember(obs.observation_id, record.partition, event.value)
            self._unacked[obs.observation_id] = outputs
            if len(self._unacked) > MAX_UNACKED:  # driven without a runner: no before_commit
                del self._unacked[next(iter(self._unacked))]
        delay = (datetime.now(UTC) - obs.captured_at).total_seconds()
        runtime_metrics.EVENT_DELAY.labels(self.stage).observe(max(0.0, delay))
        return list(outputs)

    def _published_before(self, obs: FaceObservation, partition: int) -> bytes | None:
        """The match event already published for ``obs``, reading it back from matches.v1
        when what is held does not reach back to the observation's capture (raises the read's
        error: the batch is retried, not decided without it)."""
        since = int(obs.captured_at.timestamp() * 1000) - self._published_margin_ms
        if not self.published.covers(partition, since):
            self.published.load(
                partition, self.shards.partitions, since, self.settings.startup_timeout
            )
        return self.published.get(obs.observation_id)

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


def _check_key(record: KafkaRecord, store_id: str, what: str) -> None:
    """:class:`Poison` (``key_mismatch``) unless the record is keyed by its store: the key
    decides the partition, and so which matcher owns the store's visitors."""
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    if key != store_id:
        raise Poison("key_mismatch", f"key {key!r} but the {what} is of {store_id}")
