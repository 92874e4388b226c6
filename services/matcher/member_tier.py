"""The member tier: every enrolled member, mirrored from ``members.v1`` into one gallery.

Replicated, not sharded: every matcher holds all members, so a member is recognised in any store
(see docs on Scale for when this should become hash-sharded). A :class:`MemberRecord` replaces
the member's enrolled samples; a tombstone erases the member from the gallery and its index.

Members also learn: ``member-samples.v1`` (compacted, key = member id) holds the samples the
matchers learned from confident sightings (:class:`MemberSamples`). A member's identity in the
gallery is their enrolled encodings plus their learned ones; the two come from separate topics
with separate writers (enrollment, matchers), so neither can overwrite the other. A tombstone on
either key drops what that key held; ``facestream erase`` writes both.

Records change the member dicts one by one; the gallery follows when a read hands back
(:meth:`MemberTier._settle`): every member changed meanwhile is added in one ``add_many``, so
that reading the topics at start costs one gallery build, not one per record, and a member whose
learned samples arrive after the enrolled record is placed once, not removed and added again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from facestream.core.engine import MODEL_VERSION
from facestream.core.gallery import Decision, Gallery, GalleryConfig, Identity
from facestream.core.policy import Judge, Policy
from facestream.runtime.kafka_clients import KafkaSettings
from facestream.runtime.runner import KafkaRecord
from facestream.schemas import MemberRecord, MemberSamples, SchemaError, decode, vector_to_wire
from facestream.services.matcher import metrics
from facestream.services.matcher.changelog import ChangelogReader, is_recent, of_another_model

log = logging.getLogger(__name__)

Keyed = TypeVar("Keyed", MemberRecord, MemberSamples)


def _member_key(record: KafkaRecord, tier: str) -> str | None:
    """The member id a changelog record is keyed by; None (counted, logged) when unusable."""
    try:
        member_id = record.key.decode() if record.key else ""
    except UnicodeDecodeError:
        member_id = ""
    if not member_id:
        metrics.SKIPPED.labels(tier, "bad_key").inc()
        log.warning("%s record without a usable key; skipped", tier)
        return None
    return member_id


def _decoded(model: type[Keyed], value: bytes, member_id: str, tier: str) -> Keyed | None:
    """``value`` as ``model`` when it decodes and names the member it is keyed by; else None
    (counted, logged)."""
    try:
        found = decode(model, value)
    except SchemaError as exc:
        metrics.SKIPPED.labels(tier, exc.reason).inc()
        log.error("%s record %s does not decode: %s; skipped", tier, member_id, exc)
        return None
    if found.member_id != member_id:
        metrics.SKIPPED.labels(tier, "key_mismatch").inc()
        log.error("%s record: key %s, body %s; skipped", tier, member_id, found.member_id)
        return None
    return found


@dataclass
class _Enrolled:
    identity: Identity
    vectors: NDArray[np.float32]


@dataclass
class _Learned:
    vectors: list[NDArray[np.float32]]
    learned_from: list[str]
    learned_at: datetime


class MemberTier:
    """A gallery of members kept equal to ``members.v1`` plus ``member-samples.v1``."""

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        topic: str,
        config: GalleryConfig,
        on_erased: Callable[[str], None],
        client_id: str,
        samples_topic: str | None = None,
        model_version: str = MODEL_VERSION,
    ) -> None:
        self.topic = topic
        self.samples_topic = samples_topic
        self.model_version = model_version
        """The encoder of this matcher: members enrolled, and samples learned, with another
        are ignored."""
        self.gallery = Gallery(config)
        self.judge: Judge | None = None
        self._stop_fill = threading.Event()
        self._store_judges: dict[int, Judge] = {}
        """id of a store's shard gallery -> the members' judge with it as a cohort."""
        self._on_erased = on_erased
        self._partitions: list[int] = []
        self._sample_partitions: list[int] = []
        self._enrolled: dict[str, _Enrolled] = {}
        self._learned: dict[str, _Learned] = {}
        self._source: dict[str, str] = {}
        """Observation id -> the member it taught a sample."""
        self._unplaced: dict[str, None] = {}
        """Members changed since the gallery last followed (:meth:`_settle`), the last changed
        last: the order the record-by-record path would have added them in."""
        self.reader = ChangelogReader(kafka, topic, self._apply, client_id=client_id)
        self.samples_reader = (
            ChangelogReader(
                kafka, samples_topic, self._apply_samples, client_id=f"{client_id}-samples"
            )
            if samples_topic
            else None
        )

    def start(self, timeout: float) -> int:
        """Read every member (to the end offsets of now); returns how many records were read.

        ``members.v1`` has one partition by design; any others are read as well, so that a
        topic created differently still gives every matcher every member."""
        started = time.perf_counter()
        partitions = self._partitions = self.reader.partitions(timeout)
        self.reader.assign(partitions)
        self.reader.rewind(partitions)
        try:
            count = self.reader.catch_up(partitions, timeout)
            if self.samples_reader is not None:
                learned = self._sample_partitions = self.samples_reader.partitions(timeout)
                self.samples_reader.assign(learned)
                self.samples_reader.rewind(learned)
                count += self.samples_reader.catch_up(learned, timeout)
        finally:
            self._settle()
        elapsed = time.perf_counter() - started
        metrics.REBUILD.labels("member").observe(elapsed)
        metrics.IDENTITIES.labels("member").set(len(self.gallery))
        log.info(
            "members read from %s: %d records, %d members, %d samples (%d learned) in %.2f s",
            self.topic,
            count,
            len(self.gallery),
            self.gallery.sample_count,
            sum(len(x.learned_from) for m, x in self._learned.items() if m in self._enrolled),
            elapsed,
        )
        return count

    def poll(self) -> int:
        """Apply the updates that have arrived since the last call (never waits)."""
        applied = self.reader.poll(timeout_ms=0)
        if self.samples_reader is not None:
            applied += self.samples_reader.poll(timeout_ms=0)
        self._settle()
        if applied:
            metrics.IDENTITIES.labels("member").set(len(self.gallery))
        return applied

    def catch_up(self, timeout: float) -> int:
        """Apply every update up to the end offsets of now (raises
        :class:`~.changelog.ChangelogError` past ``timeout``); returns the records applied."""
        try:
            applied = self.reader.catch_up(self._partitions, timeout)
            if self.samples_reader is not None:
                applied += self.samples_reader.catch_up(self._sample_partitions, timeout)
        finally:
            self._settle()
        if applied:
            metrics.IDENTITIES.labels("member").set(len(self.gallery))
        return applied

    def identify(
        self,
        vector: NDArray[Any],
        probe_cohorts: Sequence[Gallery] = (),
        store: Gallery | None = None,
    ) -> Decision:
        """Who ``vector`` is among the members (the normalised policy when one is set;
        ``probe_cohorts`` count in the face's own scale, see :meth:`Judge.judge_batch`;
        ``store``, a store's visitors, in the face's and the members' scales)."""
        if self.judge is not None:
            judge = self.judge if store is None else self._store_judge(store)
            return judge.judge(vector, probe_cohorts).decision
        return self.gallery.identify(vector)

    def galleries(self) -> list[Gallery]:
        """The galleries :meth:`identify` searches: the members', and the cohorts with the
        normalised policy."""
        return [self.gallery, *(self.judge.cohorts if self.judge is not None else ())]

    def use_policy(self, policy: Policy, cohorts: Sequence[Gallery] = ()) -> None:
        """Decide with the normalised ``policy``, against the other members and ``cohorts``."""
        judge = self.judge = Judge(policy, self.gallery, cohorts)
        self._store_judges.clear()
        metrics.MEMBER_SCALES.set_function(lambda: len(judge.scales))

    def _store_judge(self, store: Gallery) -> Judge:
        """The members' judge with a store's visitors as one more cohort (its own scales)."""
        assert self.judge is not None
        judge = self._store_judges.get(id(store))
        if judge is None or judge.cohorts[-1] is not store or judge.gallery is not self.gallery:
            cohorts = [*self.judge.cohorts, store]
            judge = self._store_judges[id(store)] = Judge(self.judge.policy, self.gallery, cohorts)
        return judge

    def keep_store_judges(self, stores: Sequence[Gallery]) -> None:
        """Forget the per-store judges of shards no longer held (each keeps its shard)."""
        live = {id(g): g for g in stores}
        self._store_judges = {
            key: judge
            for key, judge in self._store_judges.items()
            if live.get(key) is judge.cohorts[-1]
        }

    def fill_scales(self) -> threading.Thread | None:
        """Compute every member's scale (the normalised policy's ``u_k``) on a thread, so that
        member decisions find them ready; lookups and changes go on meanwhile, and a member
        looked up before the thread reaches them is computed then, as without it. Returns the
        thread (None without the normalised policy)."""
        judge = self.judge
        if judge is None:
            return None

        def fill() -> None:
            started = time.perf_counter()
            try:
                added = judge.scales.fill(self._stop_fill)
            except Exception:  # the lookups compute what the thread did not
                log.exception("computing the member scales failed; they are computed as needed")
                return
            elapsed = time.perf_counter() - started
            metrics.MEMBER_SCALES_FILLED.observe(elapsed)
            log.info("member scales: %d computed in %.1f s", added, elapsed)

        thread = threading.Thread(target=fill, name="member-scales", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._stop_fill.set()
        self.reader.close()
        if self.samples_reader is not None:
            self.samples_reader.close()

    # -- learned samples -----------------------------------------------------------------------

    @property
    def learns(self) -> bool:
        """Whether learned samples have a topic to go to."""
        return self.samples_reader is not None

    def learned_count(self, member_id: str) -> int:
        """How many learned samples the member holds (0 when none or unknown)."""
        learned = self._learned.get(member_id)
        return len(learned.learned_from) if learned else 0

    def taught(self, observation_id: str) -> str | None:
        """The member ``observation_id`` gave a learned sample to, if any."""
        return self._source.get(observation_id)

    def learn(
        self, member_id: str, observation_id: str, vector: NDArray[Any], seen_at: datetime
    ) -> MemberSamples:
        """Add a learned sample to an enrolled member; returns the record of all the member's
        learned samples, for ``member-samples.v1``."""
        if member_id not in self._enrolled:
            raise KeyError(member_id)
        held = self._learned.get(member_id)
        vectors = [*(held.vectors if held else []), np.asarray(vector, dtype=np.float32)]
        sources = [*(held.learned_from if held else []), observation_id]
        self._set_learned(member_id, _Learned(vectors, sources, seen_at))
        self._settle()
        return MemberSamples(
            member_id=member_id,
            model_version=self.model_version,
            encodings=[vector_to_wire(v) for v in vectors],
            learned_from=sources,
            learned_at=seen_at,
        )

    def _set_learned(self, member_id: str, learned: _Learned | None) -> None:
        old = self._learned.pop(member_id, None)
        for observation_id in old.learned_from if old else ():
            self._source.pop(observation_id, None)
        if learned is not None:
            self._learned[member_id] = learned
            for observation_id in learned.learned_from:
                self._source[observation_id] = member_id
        self._place(member_id)

    def _place(self, member_id: str) -> None:
        """Have the member put in the gallery anew (or taken out) at the next :meth:`_settle`."""
        self._unplaced.pop(member_id, None)
        self._unplaced[member_id] = None

    def _settle(self) -> None:
        """Put the members changed since the last call in the gallery as enrolled + learned:
        out of it first, then every one still enrolled back in, in one ``add_many``."""
        if not self._unplaced:
            return
        unplaced, self._unplaced = self._unplaced, {}
        for member_id in unplaced:
            if member_id in self.gallery:
                self.gallery.remove(member_id)
        self.gallery.add_many(self._samples(m) for m in unplaced if m in self._enrolled)

    def _samples(self, member_id: str) -> tuple[Identity, NDArray[np.float32]]:
        """The member's identity and gallery samples: enrolled, then learned."""
        enrolled = self._enrolled[member_id]
        learned = self._learned.get(member_id)
        vectors = np.vstack([enrolled.vectors, *learned.vectors]) if learned else enrolled.vectors
        return enrolled.identity, vectors

    def _apply_samples(self, record: KafkaRecord) -> None:
        member_id = _member_key(record, "member_samples")
        if member_id is None:
            return
        if record.value is None:
            if member_id in self._learned:
                self._set_learned(member_id, None)
                log.info("learned samples of member %s erased", member_id)
            return
        found = _decoded(MemberSamples, record.value, member_id, "member_samples")
        if found is None:
            return
        what = f"learned samples of member {member_id}"
        if of_another_model("member_samples", what, found.model_version, self.model_version):
            return
        held = self._learned.get(member_id)
        if held is not None and found.learned_from == held.learned_from:
            return  # this matcher's own record read back
        vectors = list(found.vectors)
        self._set_learned(member_id, _Learned(vectors, list(found.learned_from), found.learned_at))

    def _apply(self, record: KafkaRecord) -> None:
        # Log lines name no place: the reader applies each record inside its log context.
        member_id = _member_key(record, "member")
        if member_id is None:
            return
        if record.value is None:
            if self._enrolled.pop(member_id, None) is not None:
                # Learned samples go with the member (erase also tombstones their own key).
                self._set_learned(member_id, None)
                metrics.ERASURES.labels("member").inc()
                log.info("member %s erased", member_id)
            if is_recent(record):
                self._on_erased(member_id)
            return
        # A record that does not decode leaves the previous version of the member (if any):
        # better than losing them.
        member = _decoded(MemberRecord, record.value, member_id, "member")
        if member is None:
            return
        # Enrolled with another encoder (a model change under way): whatever was enrolled
        # before stays, as for a record that does not decode; a matcher of that model loads it.
        if of_another_model("member", f"member {member_id}", member.model, self.model_version):
            return
        # A new record is the member's whole enrolled set: replace, never merge. The learned
        # samples stay: they are of the same person, and have a key of their own.
        self._enrolled[member_id] = _Enrolled(
            Identity(member_id, member.name, "member"), member.vectors
        )
        self._place(member_id)
        log.debug("member %s: %d samples", member_id, len(member.encodings))
