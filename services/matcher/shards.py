"""Visitor shards: one gallery of anonymous FaceIds per store, mirrored from ``identities.v1``.

``identities.v1`` has the partitions of ``encodings.v1``, and a store's FaceIds are written to
the partition its observations arrive on, so owning encodings partition *p* means holding the
shards of identities partition *p*. What this matcher keeps of each identities partition:

* an owned partition: every store in it (the matcher mints there);
* a partition holding neighbours of an owned store: just those stores (read-only replicas);
* any other partition: nothing, but it is still followed from its end, so that every matcher
  sees every tombstone and can acknowledge an erasure (see :mod:`.presence`).

A revoked partition is not dropped at once: it is kept, still following the changelog (so an
erasure reaches it), until the next assignment says whether it is needed. An eager rebalance
revokes every partition and gives most of them straight back; those then need only the records
written since, not a rebuild.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from numpy.typing import NDArray

from facestream.core.gallery import Gallery, GalleryConfig, Identity
from facestream.runtime.runner import KafkaRecord
from facestream.schemas import IdentityRecord, SchemaError, decode
from facestream.schemas.keys import identity_key, partition_for, split_identity_key
from facestream.services.matcher import metrics
from facestream.services.matcher.changelog import ChangelogReader, is_recent

log = logging.getLogger(__name__)

Keep = frozenset[str] | None
"""What is kept of a partition: None = every store, else just these stores."""


@dataclass(frozen=True)
class VisitorMatch:
    face_id: str
    store_id: str
    """The store whose shard knew the face (this store or a neighbour)."""
    distance: float
    margin: float | None


@dataclass
class _Shard:
    gallery: Gallery
    partition: int
    face_of: dict[str, str] = field(default_factory=dict)
    """Observation id -> the FaceId minted from it (to re-emit the same 'new' on a replay)."""
    observation_of: dict[str, str] = field(default_factory=dict)


class VisitorShards:
    """The store shards of the owned partitions, plus neighbour replicas."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        config: GalleryConfig,
        neighbours: Mapping[str, Sequence[str]],
        on_erased: Callable[[str], None],
        client_id: str,
    ) -> None:
        self.topic = topic
        self.config = config
        self.neighbours = {store: tuple(near) for store, near in neighbours.items()}
        self.partitions = 0
        self._on_erased = on_erased
        self._shards: dict[str, _Shard] = {}
        self._keep: dict[int, Keep] = {}
        self._owned: set[int] = set()
        self._ready: set[int] = set()
        self.reader = ChangelogReader(bootstrap, topic, self._apply, client_id=client_id)

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
        rebuilt = self._reconcile(self._wanted(owned))
        self.reader.catch_up(self._keep, timeout)
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
            self._gauges()
        return applied

    def close(self) -> None:
        self.reader.close()

    def stores(self) -> list[str]:
        """The stores whose shards are held (owned, kept after a revoke, or replicas)."""
        return sorted(self._shards)

    @property
    def visitors(self) -> int:
        return sum(len(s.gallery) for s in self._shards.values())

    # -- decisions ---------------------------------------------------------------------------

    def minted_from(self, store_id: str, observation_id: str) -> str | None:
        """The FaceId already minted from this observation, if the shard holds one."""
        shard = self._shards.get(store_id)
        return shard.face_of.get(observation_id) if shard else None

    def identify(self, store_id: str, vector: NDArray[Any]) -> VisitorMatch | None:
        """The open-set decision over the store's shard and its neighbours' replicas together:
        the margin is taken over the nearest different visitor of any of them."""
        ranked: list[tuple[float, str, str]] = []
        for store in (store_id, *self.neighbours.get(store_id, ())):
            shard = self._shards.get(store)
            if shard is None or not len(shard.gallery):
                continue
            decision = shard.gallery.identify(vector)
            ranked += [(c.distance, store, c.identity.id) for c in decision.candidates]
        if not ranked:
            return None
        ranked.sort()
        distance, store, face_id = ranked[0]
        margin = ranked[1][0] - distance if len(ranked) > 1 else None
        if distance > self.config.threshold:
            return None
        if margin is not None and margin < self.config.margin:
            return None
        return VisitorMatch(face_id, store, distance, margin)

    def mint(
        self, store_id: str, partition: int, face_id: str, observation_id: str, vector: NDArray[Any]
    ) -> None:
        """Add a newly minted visitor to the store's shard (its record goes to the changelog
        through the runner; reading it back later is a no-op)."""
        self._add(store_id, partition, face_id, observation_id, vector)

    # -- internals ---------------------------------------------------------------------------

    def _wanted(self, owned: set[int]) -> dict[int, Keep]:
        wanted: dict[int, Keep] = {p: None for p in owned}
        replicas: dict[int, set[str]] = {}
        for store, near in self.neighbours.items():
            if partition_for(store, self.partitions) not in owned:
                continue
            for other in near:
                p = partition_for(other, self.partitions)
                if p not in owned:
                    replicas.setdefault(p, set()).add(other)
        wanted.update({p: frozenset(stores) for p, stores in replicas.items()})
        return wanted

    def _reconcile(self, wanted: dict[int, Keep]) -> list[int]:
        """Make what is kept match ``wanted``; returns the partitions to read from the start."""
        rebuild: list[int] = []
        for p in sorted(set(self._keep) | set(wanted)):
            if p not in wanted:
                self._drop(p, frozenset())
                del self._keep[p]
            elif p not in self._keep:
                rebuild.append(p)
            else:
                old, new = self._keep[p], wanted[p]
                if old is None or (new is not None and new <= old):
                    self._drop(p, new)  # narrower: forgetting is enough
                else:
                    self._drop(p, frozenset())
                    rebuild.append(p)
            if p in wanted:
                self._keep[p] = wanted[p]
        self.reader.rewind(rebuild)
        return rebuild

    def _drop(self, partition: int, keep: Keep) -> None:
        """Forget the stores of ``partition`` that ``keep`` does not keep (None: keep all)."""
        if keep is None:
            return
        for store in [s for s, sh in self._shards.items() if sh.partition == partition]:
            if store not in keep:
                del self._shards[store]

    def _keeps(self, partition: int, store_id: str) -> bool:
        if partition not in self._keep:
            return False
        keep = self._keep[partition]
        return keep is None or store_id in keep

    def _add(
        self, store_id: str, partition: int, face_id: str, observation_id: str, vector: Any
    ) -> bool:
        shard = self._shards.get(store_id)
        if shard is None:
            shard = self._shards[store_id] = _Shard(Gallery(self.config), partition)
        elif shard.partition != partition:
            log.warning(
                "store %s seen in %s partitions %d and %d (producers disagree on partitioning)",
                store_id,
                self.topic,
                shard.partition,
                partition,
            )
        if face_id in shard.gallery:
            return False
        shard.gallery.add(Identity(face_id, kind="visitor", meta={"store": store_id}), vector)
        shard.face_of[observation_id] = face_id
        shard.observation_of[face_id] = observation_id
        return True

    def _remove(self, store_id: str, face_id: str) -> None:
        shard = self._shards.get(store_id)
        if shard is None or face_id not in shard.gallery:
            return
        shard.gallery.remove(face_id)
        observation = shard.observation_of.pop(face_id, None)
        if observation is not None:
            shard.face_of.pop(observation, None)
        metrics.ERASURES.labels("visitor").inc()
        log.info("visitor %s erased from store %s", face_id, store_id)

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
            self._remove(store, face_id)
            if is_recent(record):
                self._on_erased(identity_key(store, face_id))
            return
        if not self._keeps(record.partition, store):
            return
        try:
            ident = decode(IdentityRecord, record.value)
        except SchemaError as exc:
            metrics.SKIPPED.labels("visitor", exc.reason).inc()
            log.error("identity record (store %s) does not decode: %s", store, exc)
            return
        if (ident.store_id, ident.face_id) != key:
            metrics.SKIPPED.labels("visitor", "key_mismatch").inc()
            log.error("identity record: key %s/%s, body differs; skipped", *key)
            return
        self._add(store, record.partition, face_id, ident.observation_id, ident.vector)

    def _gauges(self) -> None:
        metrics.SHARDS.set(len(self._shards))
        metrics.IDENTITIES.labels("visitor").set(self.visitors)
