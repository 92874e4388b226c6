"""Visitor shards: the store shards (:mod:`.visitors`) of the owned partitions, mirrored from
``identities.v1``.

``identities.v1`` has the partitions of ``encodings.v1``, and a store's FaceIds are written to
the partition its observations arrive on, so owning encodings partition *p* means holding the
shards of identities partition *p*. What this matcher keeps of each identities partition:

* an owned partition: every store in it (the matcher mints and learns there);
* a partition holding neighbours of an owned store: just those stores (read-only replicas);
* any other partition: nothing, but it is still followed from its end, so that every matcher
  sees every tombstone and can acknowledge an erasure (see :mod:`.presence`).

A revoked partition is not dropped at once: it is kept, still following the changelog (so an
erasure reaches it), until the next assignment says whether it is needed. An eager rebalance
revokes every partition and gives most of them straight back; those then need only the records
written since, not a rebuild.

A record is a visitor's whole state: applying one replaces the visitor, unless every sample of
it is held already. A record that lands after its key's tombstone is not applied (:mod:`.erased`).
Records are applied one by one, in offset order, but their samples are only staged: they reach
the galleries in bulk when the read hands back (:meth:`VisitorShards._settle`), so that taking
over a partition costs one gallery build per shard, not one per record.

Snapshots: with a :class:`~.snapshots.SnapshotStore`, a partition to read again starts from its
snapshot (written by :mod:`.snapshot_job`) when one may be used: its shards are loaded in bulk,
its tombstones remembered, and the changelog is read from the snapshot's offset instead of the
start. Stores already held as replicas keep their shards (they followed the changelog).

Retention: before each decision in an owned store, :meth:`VisitorShards.retire` drops the
store's visitors whose ``last_seen`` is more than the retention period behind the store's clock
(its latest event time), and the decider tombstones them. Judged at decision time and in event
time, not by a timer: which visitors a decision can match depends on the input alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from numpy.typing import NDArray

from facestream.core.engine import MODEL_VERSION
from facestream.core.gallery import Gallery, GalleryConfig
from facestream.core.policy import Judge, Judgement, Policy
from facestream.runtime.kafka_clients import KafkaSettings
from facestream.runtime.runner import KafkaRecord
from facestream.schemas import IdentityRecord, SchemaError
from facestream.schemas.keys import identity_key, is_retirement, split_identity_key
from facestream.services.matcher import metrics, ownership
from facestream.services.matcher.changelog import ChangelogReader, is_recent, of_another_model
from facestream.services.matcher.erased import ErasedKeys
from facestream.services.matcher.ownership import Keep
from facestream.services.matcher.snapshots import Snapshot, SnapshotStore, StoreVisitors
from facestream.services.matcher.visitors import SampleSource, StoreShard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VisitorMatch:
    face_id: str
    store_id: str
    """The store whose shard knew the face (this store or a neighbour)."""
    distance: float
    margin: float | None


class VisitorShards:
    """The store shards of the owned partitions, plus neighbour replicas."""

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        topic: str,
        config: GalleryConfig,
        neighbours: Mapping[str, Sequence[str]],
        on_erased: Callable[[str], None],
        client_id: str,
        retention: timedelta | None = None,
        model_version: str = MODEL_VERSION,
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self.topic = topic
        self.snapshots = snapshots
        """Where partitions taken over may start from (:mod:`.snapshots`); None: always the
        whole changelog."""
        self._wrote = False
        """Whether this matcher changed a shard itself (minted, learned, retired): its shards
        are then no longer exactly the changelog, and :meth:`snapshot` refuses."""
        self._snapshotted: set[int] = set()
        """Partitions last taken over from a snapshot (see :meth:`from_snapshot`)."""
        self.config = config
        self.model_version = model_version
        """The encoder of this matcher: visitors recorded with another are not loaded."""
        self.retention = retention
        """How long an owned store's visitor is kept unseen (None: for ever)."""
        self.neighbours = {store: tuple(near) for store, near in neighbours.items()}
        self.partitions = 0
        self._on_erased = on_erased
        self._shards: dict[str, StoreShard] = {}
        self._keep: dict[int, Keep] = {}
        self._owned: set[int] = set()
        self._ready: set[int] = set()
        self._erased = ErasedKeys()
        self._staged: set[str] = set()
        """Stores whose shards hold staged samples (see :meth:`_settle`)."""
        self._policy: Policy | None = None
        self._cohorts: list[Gallery] = []
        self._judges: dict[tuple[str, str], Judge] = {}
        """(store decided for, shard searched) -> its judge: the cohort differs per store."""
        self.reader = ChangelogReader(kafka, topic, self._apply, client_id=client_id)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float) -> None:
        """Follow every partition from its end (for tombstones) until shards are assigned."""
        partitions = self.reader.partitions(timeout)
        self.partitions = len(partitions)
        self.reader.assign(partitions)
        self.reader.skip_to_end(partitions)

    def own(self, partitions: Iterable[int], timeout: float) -> None:
        """Take ``partitions``: build (or bring up to date) their shards and the neighbour
        replicas of their stores, reading the changelog to its current end."""
        owned = self._owned | set(partitions)
        started = time.perf_counter()
        rebuilt = self._reconcile(ownership.wanted(owned, self.neighbours, self.partitions))
        try:
            self.reader.catch_up(self._keep, timeout)
        finally:
            self._settle()
        self._owned = owned
        self._ready = set(owned)
        elapsed = time.perf_counter() - started
        metrics.REBUILD.labels("visitor").observe(elapsed)
        self._gauges()
        log.info(
            "%s: own partitions %s (rebuilt %s, kept %s); %d shards, %d visitors in %.2f s",
            self.topic,
            sorted(owned),
            sorted(rebuilt),
            sorted(set(self._keep) - set(rebuilt)),
            len(self._shards),
            self.visitors,
            elapsed,
        )

    def release(self, partitions: Iterable[int]) -> None:
        """Stop minting in ``partitions``; their shards stay (and follow the changelog) until
        the next :meth:`own` decides whether they are still needed."""
        gone = set(partitions)
        self._owned -= gone
        self._ready -= gone

    def ready(self, partition: int) -> bool:
        return partition in self._ready

    def poll(self) -> int:
        """Apply what has arrived on the changelog (tombstones above all); never waits."""
        applied = self.reader.poll(timeout_ms=0)
        if applied:
            self._settle()
            self._gauges()
        return applied

    def catch_up(self, timeout: float) -> int:
        """Apply the changelog of every kept partition up to its end offset of now (raises
        :class:`~.changelog.ChangelogError` past ``timeout``); returns the records applied."""
        try:
            applied = self.reader.catch_up(self._keep, timeout)
        finally:
            self._settle()
        if applied:
            self._gauges()
        return applied

    def close(self) -> None:
        self.reader.close()

    def stores(self) -> list[str]:
        """The stores whose shards are held (owned, kept after a revoke, or replicas)."""
        return sorted(self._shards)

    @property
    def visitors(self) -> int:
        return sum(len(s) for s in self._shards.values())

    # -- decisions ---------------------------------------------------------------------------

    def source_of(self, store_id: str, observation_id: str) -> SampleSource | None:
        """The sample this observation gave a visitor of the store (minted or learned)."""
        shard = self._shards.get(store_id)
        return shard.source_of(observation_id) if shard else None

    def use_policy(self, policy: Policy, cohorts: Sequence[Gallery]) -> None:
        """Decide with the normalised ``policy``: each shard's visitors are judged against the
        shard's other visitors, the other shards searched with it and ``cohorts`` (the members):
        so the first visitors of an empty store are not judged alone."""
        self._policy = policy
        self._cohorts = list(cohorts)
        self._judges.clear()

    def identify(self, store_id: str, vector: NDArray[Any]) -> VisitorMatch | None:
        """The open-set decision over the store's shard and its neighbours' replicas together:
        the margin is taken over the nearest different visitor of any of them."""
        if self._policy is not None:
            return self._judged(store_id, vector)
        ranked = self._ranked(store_id, vector)
        if not ranked:
            return None
        distance, store, face_id = ranked[0]
        margin = ranked[1][0] - distance if len(ranked) > 1 else None
        if distance > self.config.threshold:
            return None
        if margin is not None and margin < self.config.margin:
            return None
        return VisitorMatch(face_id, store, distance, margin)

    def store_galleries(self) -> list[Gallery]:
        """The gallery of every shard held."""
        return [shard.gallery for shard in self._shards.values()]

    def store_gallery(self, store_id: str) -> Gallery | None:
        """The gallery of the store's own shard (None when no shard of it is held)."""
        shard = self._shards.get(store_id)
        return shard.gallery if shard is not None else None

    def galleries_for(self, store_id: str) -> list[Gallery]:
        """The galleries :meth:`identify` searches for a face of ``store_id``: the store's
        shard and its neighbours' replicas, and the cohorts with the normalised policy."""
        stores = (store_id, *self.neighbours.get(store_id, ()))
        shards = [self._shards[s].gallery for s in stores if s in self._shards]
        return [*shards, *(self._cohorts if self._policy is not None else ())]

    def as_of(self, store_id: str, vector: NDArray[Any], source: SampleSource) -> VisitorMatch:
        """The match an observation that gave a visitor its sample ``source.index`` had: the
        distance to the samples the visitor had before it, and the margin over the others (a
        replay, after a rebuild, re-emits the decision without the sample it taught)."""
        samples = self._shards[store_id].distances(source.face_id, vector)
        distance = float(samples[: source.index].min())
        ranked = self._ranked(store_id, vector)
        others = [d for d, _, face_id in ranked if face_id != source.face_id]
        margin = others[0] - distance if others else None
        return VisitorMatch(source.face_id, store_id, distance, margin)

    def sample_count(self, store_id: str, face_id: str) -> int:
        shard = self._shards.get(store_id)
        return shard.sample_count(face_id) if shard else 0

    def nearest_sample(self, store_id: str, face_id: str, vector: NDArray[Any]) -> int:
        """Which of the visitor's samples is nearest ``vector`` (0 = the minting one)."""
        return int(self._shards[store_id].distances(face_id, vector).argmin())

    def record(self, store_id: str, face_id: str) -> IdentityRecord:
        """The visitor's current record (every sample)."""
        return self._shards[store_id].record(face_id)

    def erased(self, store_id: str, face_id: str) -> bool:
        """Whether the FaceId was tombstoned (as far as this matcher remembers)."""
        return identity_key(store_id, face_id) in self._erased

    def mint(self, partition: int, record: IdentityRecord) -> None:
        """Add a newly minted visitor to the store's shard (its record goes to the changelog
        through the runner; reading it back later is a no-op)."""
        self._wrote = True
        if self._shard(record.store_id, partition).apply(record):
            metrics.VISITOR_SAMPLES.inc()

    def learn(
        self,
        store_id: str,
        face_id: str,
        observation_id: str,
        vector: NDArray[Any],
        at: datetime,
    ) -> IdentityRecord:
        """Add a sample (of a sighting at ``at``) to a visitor of an owned store; returns the
        record to write."""
        self._wrote = True
        record = self._shards[store_id].learn(face_id, observation_id, vector, at)
        metrics.VISITOR_SAMPLES.inc()
        return record

    def sighted(self, store_id: str, face_id: str, at: datetime) -> IdentityRecord | None:
        """A sighting at ``at`` of a visitor of an owned store that taught nothing: the record
        to write when it moves the visitor's ``last_seen`` (see :mod:`.visitors`)."""
        self._wrote = True
        return self._shards[store_id].sighted(face_id, at)

    def retire(self, store_id: str, at: datetime, limit: int) -> list[str]:
        """Before deciding an observation of an owned store captured at ``at``: drop up to
        ``limit`` of the store's visitors unseen for the retention period, the longest unseen
        first, and return their keys (to tombstone). The bound keeps one decision short when a
        store comes back after a long silence; the rest go with the next decisions."""
        shard = self._shards.get(store_id)
        if shard is None:
            return []
        shard.tick(at)
        if self.retention is None or shard.clock is None:
            return []
        retired = shard.expired(shard.clock - self.retention, limit)
        if retired:
            self._wrote = True
            shard.remove_many(retired)  # one pass over the shard, however many
            metrics.RETIRED.inc(len(retired))
            log.debug("retired %d visitors of store %s", len(retired), store_id)
        return [identity_key(store_id, face_id) for face_id in retired]

    def take_resurrected(self) -> list[tuple[str, int]]:
        """Keys of owned partitions written after their tombstone, to tombstone again."""
        return self._erased.take(self._owned)

    # -- internals ---------------------------------------------------------------------------

    def _judged(self, store_id: str, vector: NDArray[Any]) -> VisitorMatch | None:
        """The normalised decision: the best accepted visitor of the store and its neighbours."""
        assert self._policy is not None
        stores = [
            s
            for s in (store_id, *self.neighbours.get(store_id, ()))
            if s in self._shards and len(self._shards[s])
        ]
        best: tuple[float, str, Judgement] | None = None
        for store in stores:
            shard = self._shards[store]
            cohorts = [*self._cohorts, *(self._shards[o].gallery for o in stores if o != store)]
            judge = self._judges.get((store_id, store))
            # A new judge when the shard was rebuilt or the set of searched neighbours changed
            # (one that was empty before now holds visitors); its scale cache starts afresh.
            if (
                judge is None
                or judge.gallery is not shard.gallery
                or len(judge.cohorts) != len(cohorts)
                or any(a is not b for a, b in zip(judge.cohorts, cohorts, strict=True))
            ):
                judge = Judge(self._policy, shard.gallery, cohorts)
                self._judges[(store_id, store)] = judge
            verdict = judge.judge(vector)
            if verdict.matched:
                key = verdict.score if verdict.score is not None else float("inf")
                if best is None or key < best[0]:
                    best = (key, store, verdict)
        if best is None:
            return None
        _, store, verdict = best
        decision = verdict.decision
        assert decision.identity is not None and decision.distance is not None
        return VisitorMatch(decision.identity.id, store, decision.distance, decision.margin)

    def _ranked(self, store_id: str, vector: NDArray[Any]) -> list[tuple[float, str, str]]:
        """(distance, store, face id) of the nearest visitors, nearest first."""
        ranked: list[tuple[float, str, str]] = []
        for store in (store_id, *self.neighbours.get(store_id, ())):
            shard = self._shards.get(store)
            if shard is None or not len(shard):
                continue
            decision = shard.gallery.identify(vector)
            ranked += [(c.distance, store, c.identity.id) for c in decision.candidates]
        ranked.sort()
        return ranked

    def _reconcile(self, wanted: dict[int, Keep]) -> list[int]:
        """Make what is kept match ``wanted``; returns the partitions to read again (from their
        snapshot's offset, or from the start)."""
        plan = ownership.plan(self._keep, wanted)
        for partition, keep in plan.forget.items():
            for store in [s for s, sh in self._shards.items() if sh.partition == partition]:
                if store not in keep:
                    del self._shards[store]
        self._keep = dict(wanted)
        self._snapshotted -= set(plan.rebuild)
        from_start = [p for p in plan.rebuild if not self._from_snapshot(p)]
        self.reader.rewind(from_start)
        return plan.rebuild

    def _from_snapshot(self, partition: int) -> bool:
        """Load the partition's snapshot, if one may be used, and read on from its offset."""
        if self.snapshots is None:
            return False
        snapshot = self.snapshots.usable(
            self.topic,
            partition,
            partitions=self.partitions,
            model_version=self.model_version,
            first_offset=self.reader.first_offset(partition),
        )
        if snapshot is None:
            return False
        loaded = 0
        for store in snapshot.stores:
            # A shard held already (a replica now owned) followed the changelog: it is newer.
            if store.store_id in self._shards or not ownership.keeps(
                self._keep, partition, store.store_id
            ):
                continue
            shard = StoreShard(self.config, store.store_id, partition, self.model_version)
            shard.load(store.visitors, store.vectors)
            self._shards[store.store_id] = shard
            loaded += len(store.visitors)
        self._erased.restore(partition, snapshot.tombstones, snapshot.again)
        self.reader.seek(partition, snapshot.offset)
        self._snapshotted.add(partition)
        log.info(
            "%s[%d]: %d visitors from the snapshot of %s (offset %d); reading on from there",
            self.topic,
            partition,
            loaded,
            snapshot.written_at.isoformat(timespec="seconds"),
            snapshot.offset,
        )
        return True

    def from_snapshot(self, partition: int) -> bool:
        """Whether the partition was last taken over from a snapshot (else from its start)."""
        return partition in self._snapshotted

    def tombstones(self, partition: int) -> list[tuple[str, int]]:
        """``(key, offset)`` of the erasure tombstones remembered in ``partition``."""
        return self._erased.in_partition(partition)

    def snapshot(self, partition: int) -> Snapshot:
        """Every store shard of ``partition`` as read from the changelog up to the reader's
        position (for :mod:`.snapshot_job`: a matcher's own shards hold what it minted before
        reading it back, so this refuses once anything was written here)."""
        if self._wrote:
            raise RuntimeError("a matcher's shards are not a snapshot of the changelog")
        if self._keep.get(partition, frozenset()) is not None:
            raise RuntimeError(f"partition {partition} is not kept whole")
        self._settle()
        stores = []
        for store_id, shard in self._shards.items():
            if shard.partition == partition:
                visitors, vectors = shard.export()
                stores.append(StoreVisitors(store_id, visitors, vectors))
        return Snapshot(
            topic=self.topic,
            partition=partition,
            partitions=self.partitions,
            offset=self.reader.position(partition),
            written_at=datetime.now(UTC),
            model_version=self.model_version,
            stores=stores,
            tombstones=self._erased.in_partition(partition),
            again=self._erased.again_in(partition),
        )

    def _shard(self, store_id: str, partition: int) -> StoreShard:
        shard = self._shards.get(store_id)
        if shard is None:
            shard = StoreShard(self.config, store_id, partition, self.model_version)
            self._shards[store_id] = shard
        elif shard.partition != partition:
            log.warning(
                "store %s seen in %s partitions %d and %d (producers disagree on partitioning)",
                store_id,
                self.topic,
                shard.partition,
                partition,
            )
        return shard

    def _erase(self, record: KafkaRecord, store_id: str, face_id: str) -> None:
        key = identity_key(store_id, face_id)
        if is_retirement(record.headers):
            # The owner dropped it already; a replica holding it drops it here. Not an erasure:
            # nothing to acknowledge, and no key to guard (see facestream.schemas.keys.RETIRED).
            shard = self._shards.get(store_id)
            if shard is not None:
                shard.remove(face_id)
            return
        self._erased.tombstoned(key, record.partition, record.offset)
        shard = self._shards.get(store_id)
        if shard is not None and shard.remove(face_id):
            metrics.ERASURES.labels("visitor").inc()
            log.info("visitor %s erased from store %s", face_id, store_id)
        if is_recent(record):
            self._on_erased(key)

    def _apply(self, record: KafkaRecord) -> None:
        # Log lines name no place: the reader applies each record inside its log context.
        try:
            key = split_identity_key(record.key.decode()) if record.key else None
        except UnicodeDecodeError:
            key = None
        if key is None:
            metrics.SKIPPED.labels("visitor", "bad_key").inc()
            log.warning("identity record without a store/face_id key; skipped")
            return
        store, face_id = key
        if record.value is None:
            self._erase(record, store, face_id)
            return
        if not ownership.keeps(self._keep, record.partition, store):
            return
        if self._erased.written_after(identity_key(*key), record.partition, record.offset):
            metrics.SKIPPED.labels("visitor", "erased").inc()
            log.warning("visitor %s/%s written after its tombstone; not restored", *key)
            return
        try:
            ident = IdentityRecord.read(record.value)
        except SchemaError as exc:
            metrics.SKIPPED.labels("visitor", exc.reason).inc()
            log.error("identity record (store %s) does not decode: %s", store, exc)
            return
        if (ident.store_id, ident.face_id) != key:
            metrics.SKIPPED.labels("visitor", "key_mismatch").inc()
            log.error("identity record: key %s/%s, body differs; skipped", *key)
            return
        # A model change under way: the visitor is not loaded, a stranger to this model.
        what = f"visitor {store}/{face_id}"
        if of_another_model("visitor", what, ident.model, self.model_version):
            return
        if self._shard(store, record.partition).stage(ident):
            self._staged.add(store)

    def _settle(self) -> None:
        """Add the staged samples of every shard to its gallery (before anything searches it;
        a read that failed half-way still leaves the records it applied in place)."""
        for store in self._staged:
            shard = self._shards.get(store)
            if shard is not None:  # not forgotten since
                shard.settle()
        self._staged.clear()

    def _gauges(self) -> None:
        metrics.SHARDS.set(len(self._shards))
        metrics.IDENTITIES.labels("visitor").set(self.visitors)
        metrics.VISITOR_SAMPLES.set(sum(s.samples for s in self._shards.values()))
