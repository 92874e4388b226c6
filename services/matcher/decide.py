"""Who one face is, and what the matcher writes about it.

Members first (:mod:`.member_tier`), then the store's visitors with its neighbours' replicas
(:mod:`.shards`); a confident match may teach the member or the visitor a sample
(:mod:`.learning`); else a FaceId derived from the observation id. A visitor's record, all its
samples, goes to ``identities.v1`` whenever it is minted, learns, or is seen a day or more
after its recorded ``last_seen``; a member's learned samples to ``member-samples.v1``. One face
at a time: a sample learned from a face is already there when the next face of the batch is
decided. A face decided before (its match event is held by :mod:`.decided`) gets that event
again, whatever changed since: a member enrolled, a visitor erased.

Before each decision the store's visitors unseen for the retention period are retired (their
tombstones lead the decision's outputs): members never are.
"""

from __future__ import annotations

import logging
from typing import Final

from facestream.core.gallery import Decision
from facestream.runtime.runner import Output
from facestream.schemas import FaceObservation, IdentityRecord, MemberSamples, derived_id
from facestream.services.matcher import metrics
from facestream.services.matcher.learning import LearnPolicy, MemberLearnPolicy
from facestream.services.matcher.member_tier import MemberTier
from facestream.services.matcher.outputs import Outputs
from facestream.services.matcher.shards import VisitorMatch, VisitorShards
from facestream.services.matcher.visitors import SampleSource

log = logging.getLogger(__name__)


MAX_RETIRED_PER_DECISION: Final = 256
"""Visitors retired at most before one decision. A busy store retires about as many visitors as
it mints, under one per decision; a store back from a silence longer than the retention owes
its whole shard, which then goes this many per decision instead of stalling one decision. The
retirements of a decision are one gallery removal, a pass over the store's shard that costs
about the same however few it erases (flat index, 80k visitors, on this 2-core machine: 1.6 ms
for one visitor, 1.5 ms for 256), plus some 20 us a visitor of bookkeeping. Measured with
``benchmarks.pipeline.retention`` (docs/pipeline-benchmarks.md, section 6): an 85k-visitor
shard is emptied in 333 decisions of 6.5 ms CPU (median), where 16 a decision took 5,313 of
1 ms, five days of a busy store's traffic during which visitors past the retention could still
be matched. A count, not a time budget: which visitors a decision can match must depend on event
time alone."""


class Decider:
    """Decides faces against the member tier and the visitor shards (state it only reads,
    mints into and teaches: following the changelogs is the handler's)."""

    def __init__(
        self,
        members: MemberTier,
        shards: VisitorShards,
        learning: LearnPolicy,
        out: Outputs,
        member_learning: MemberLearnPolicy | None = None,
        store_cohort: str = "none",
    ) -> None:
        self.store_cohort = store_cohort
        """Whether the member decision counts the store's visitors: ``none``, ``store`` (in
        the face's scale) or ``store_both`` (the member's too)."""
        self.members = members
        self.shards = shards
        self.learning = learning
        self.member_learning = member_learning
        self.out = out

    def decide(
        self, obs: FaceObservation, partition: int, published: bytes | None = None
    ) -> list[Output]:
        """The outputs for ``obs``, which arrived on ``partition``: the tombstones of the
        visitors it retired, then the visitor's record when one was minted, taught a sample,
        seen again or replayed, then its match event. ``published``: the match event already
        published for ``obs`` (:mod:`.decided`), which is emitted again as it was."""
        retired = self.shards.retire(obs.store_id, obs.captured_at, MAX_RETIRED_PER_DECISION)
        tombstones = [self.out.retirement(key, partition) for key in retired]
        return [*tombstones, *self._decided(obs, partition, published)]

    def _decided(
        self, obs: FaceObservation, partition: int, published: bytes | None
    ) -> list[Output]:
        # Log lines here carry the record's place, store and camera (the runner's log context).
        vector = obs.vector
        source = self.shards.source_of(obs.store_id, obs.observation_id)
        if source is not None:
            replayed = self._replayed(obs, source, partition)
            if published is None:
                return replayed
            # The visitor's record again (it may not have landed), the event as published.
            return [*replayed[:-1], self.out.published(obs, published)]
        if published is not None:
            metrics.DECISIONS.labels("replayed").inc()
            log.info("%s decided before: its match event re-emitted", obs.observation_id)
            return [self.out.published(obs, published)]

        shard = self.shards.store_gallery(obs.store_id) if self.store_cohort != "none" else None
        if shard is None:
            member = self.members.identify(vector)
        elif self.store_cohort == "store":
            member = self.members.identify(vector, [shard])
        else:
            member = self.members.identify(vector, store=shard)
        if member.identity is not None:
            metrics.DECISIONS.labels("member").inc()
            fields = {"member_id": member.identity.id, "margin": member.margin}
            event = self.out.match(obs, "member", distance=member.distance, **fields)
            taught = self._learn_member(obs, member)
            return [self.out.member_samples(taught), event] if taught else [event]

        visitor = self.shards.identify(obs.store_id, vector)
        if visitor is not None:
            metrics.DECISIONS.labels("returning").inc()
            written = self._learn(obs, visitor) or self._sighted(obs, visitor)
            event = self._returning(obs, visitor)
            return [self.out.identity(written, partition), event] if written else [event]

        face_id = derived_id("face", obs.observation_id)
        metrics.DECISIONS.labels("new").inc()
        event = self.out.match(obs, "new", face_id=face_id, matched_store_id=None)
        if self.shards.erased(obs.store_id, face_id):
            # A replay of the observation an erased FaceId was minted from: the event is still
            # due (the sink drops events of erased persons), the FaceId must not come back.
            log.warning(
                "%s minted %s, which is erased: not minted again", obs.observation_id, face_id
            )
            return [event]
        minted = IdentityRecord.minted(
            face_id=face_id,
            store_id=obs.store_id,
            encoding=obs.encoding,
            first_seen=obs.captured_at,
            observation_id=obs.observation_id,
            model_version=obs.model_version,
        )
        self.shards.mint(partition, minted)
        log.debug("minted %s from %s", face_id, obs.observation_id)
        return [self.out.identity(minted, partition), event]

    def _returning(self, obs: FaceObservation, visitor: VisitorMatch) -> Output:
        return self.out.match(
            obs,
            "returning",
            face_id=visitor.face_id,
            matched_store_id=visitor.store_id,
            distance=visitor.distance,
            margin=visitor.margin,
        )

    def _learn(self, obs: FaceObservation, visitor: VisitorMatch) -> IdentityRecord | None:
        """Add the sighting to the visitor's samples when :mod:`.learning` allows; the
        visitor's new record, else None."""
        samples = self.shards.sample_count(visitor.store_id, visitor.face_id)
        if samples > 1 and self.shards.nearest_sample(
            visitor.store_id, visitor.face_id, obs.vector
        ):
            metrics.BY_LEARNED_SAMPLE.inc()
        refusal = self.learning.refusal(obs, visitor, samples)
        if refusal is not None:
            metrics.LEARN_SKIPPED.labels(refusal).inc()
            metrics.RETURNING_SAMPLES.observe(samples)
            return None
        record = self.shards.learn(
            obs.store_id, visitor.face_id, obs.observation_id, obs.vector, obs.captured_at
        )
        metrics.SAMPLES_LEARNED.inc()
        metrics.RETURNING_SAMPLES.observe(samples + 1)
        log.debug("%s learned sample %d from %s", visitor.face_id, samples, obs.observation_id)
        return record

    def _sighted(self, obs: FaceObservation, visitor: VisitorMatch) -> IdentityRecord | None:
        """The visitor's record again when this sighting moves its ``last_seen``; else None. A
        neighbour's visitor is its owner's to write (as with learning), so is not refreshed."""
        if visitor.store_id != obs.store_id:
            return None
        record = self.shards.sighted(obs.store_id, visitor.face_id, obs.captured_at)
        if record is not None:
            metrics.LAST_SEEN_WRITTEN.inc()
        return record

    def _learn_member(self, obs: FaceObservation, member: Decision) -> MemberSamples | None:
        """Add the sighting to the member's learned samples when :mod:`.learning` allows; the
        member's new learned-samples record, else None."""
        if self.member_learning is None or not self.members.learns or member.identity is None:
            return None
        member_id = member.identity.id
        if self.members.taught(obs.observation_id) is not None:
            # Learned from before (a replay after the record was written): nothing new.
            metrics.MEMBER_LEARN_SKIPPED.labels("known").inc()
            return None
        refusal = self.member_learning.refusal(obs, member, self.members.learned_count(member_id))
        if refusal is not None:
            metrics.MEMBER_LEARN_SKIPPED.labels(refusal).inc()
            return None
        record = self.members.learn(member_id, obs.observation_id, obs.vector, obs.captured_at)
        metrics.MEMBER_SAMPLES_LEARNED.inc()
        log.debug("member %s learned a sample from %s", member_id, obs.observation_id)
        return record

    def _replayed(self, obs: FaceObservation, source: SampleSource, partition: int) -> list[Output]:
        """An observation that minted or taught a visitor held in memory was handled before
        (its record read back after a crash or rebalance, or a batch retried past what is
        remembered): the same event and the visitor's record again. The record is the current
        one: re-writing an older one, with fewer samples, would roll the compacted topic back.
        """
        metrics.DECISIONS.labels("replayed").inc()
        log.info("%s replayed, re-emitting %s", obs.observation_id, source.face_id)
        record = self.shards.record(obs.store_id, source.face_id)
        if source.index == 0:
            event = self.out.match(obs, "new", face_id=source.face_id, matched_store_id=None)
        else:
            event = self._returning(obs, self.shards.as_of(obs.store_id, obs.vector, source))
        return [self.out.identity(record, partition), event]

    def tombstones_again(self) -> list[Output]:
        """Tombstones for visitors whose record landed after their erasure (see .erased)."""
        due = self.shards.take_resurrected()
        for key, _ in due:
            metrics.RETOMBSTONED.inc()
            log.warning("tombstoning %s again: a record of it followed its erasure", key)
        return [self.out.tombstone(key, partition) for key, partition in due]
