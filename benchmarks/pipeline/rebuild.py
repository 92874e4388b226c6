"""How long a matcher takes to rebuild its state from the changelogs, on the real broker.

A store shard is rebuilt from ``identities.v1`` when its partition is assigned
(``VisitorShards.own``), the member tier from ``members.v1`` at start (``MemberTier.start``);
both apply one ``Gallery.add`` per record, and each add copies every sample held so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from benchmarks.pipeline.matcher import PER_PERSON, STORE
from benchmarks.pipeline.synthetic import EncodingModel
from facestream.core.gallery import GalleryConfig
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import IdentityRecord, MemberRecord, derived_id, vector_to_wire
from facestream.schemas.keys import identity_key, partition_for
from facestream.services.matcher.member_tier import MemberTier
from facestream.services.matcher.shards import VisitorShards


def measure_rebuild(
    pipeline: PipelineSettings,
    model: EncodingModel,
    visitors: int,
    partitions: int,
    rng: np.random.Generator,
    timeout: float,
) -> dict[str, float]:
    """Seconds for a matcher to build a store shard of ``visitors`` from ``identities.v1``
    (``VisitorShards.own``, what an assignment triggers) and a member tier of
    ``visitors // 3`` members with 3 samples each from ``members.v1`` (``MemberTier.start``)."""
    topics = pipeline.topics
    p = partition_for(STORE, partitions)
    producer = make_producer(pipeline)
    now = datetime.now(UTC)
    try:
        for i, v in enumerate(model.photos(model.people(visitors, rng), rng)):
            face_id = derived_id("face", f"rebuild-{i}")
            identity = IdentityRecord.minted(
                face_id=face_id,
                store_id=STORE,
                encoding=vector_to_wire(v),
                first_seen=now,
                observation_id=f"rebuild-{i}:0",
            )
            key = identity_key(STORE, face_id).encode()
            producer.send(topics.identities, identity.to_bytes(), key, partition=p)
        members = visitors // PER_PERSON
        vectors, owners, _ = model.gallery(members * PER_PERSON, PER_PERSON, rng)
        for m in range(members):
            record = MemberRecord(
                member_id=f"m{m}",
                encodings=[vector_to_wire(v) for v in vectors[owners == m]],
                enrolled_at=now,
            )
            producer.send(topics.members, record.to_bytes(), f"m{m}".encode())
        producer.flush(timeout=120)
    finally:
        producer.close()
    config = GalleryConfig()

    def ignore(_subject: str) -> None:
        pass

    shards = VisitorShards(
        kafka=pipeline,
        topic=topics.identities,
        config=config,
        neighbours={},
        on_erased=ignore,
        client_id="bench-rebuild-identities",
    )
    try:
        shards.start(timeout)
        shard_s = _seconds(lambda: shards.own([p], timeout))
        if shards.visitors != visitors:
            raise RuntimeError(f"shard rebuilt with {shards.visitors} visitors, not {visitors}")
    finally:
        shards.close()
    tier = MemberTier(
        kafka=pipeline,
        topic=topics.members,
        config=config,
        on_erased=ignore,
        client_id="bench-rebuild-members",
    )
    try:
        member_s = _seconds(lambda: tier.start(timeout))
        if len(tier.gallery) != members:
            raise RuntimeError(f"member tier read {len(tier.gallery)} members, not {members}")
    finally:
        tier.close()
    return {
        "visitors": visitors,
        "shard_seconds": shard_s,
        "members": members,
        "member_samples": members * PER_PERSON,
        "member_seconds": member_s,
    }


def project_rebuild(
    rebuild_at: int,
    rebuild_seconds: float,
    add_small: tuple[int, float],
    add_large: tuple[int, float],
    target: int,
) -> float:
    """Seconds to rebuild ``target`` one-sample records, extrapolated: the per-record cost
    measured at ``rebuild_at``, plus the growth of ``Gallery.add`` with the gallery's size
    (linear between the two measured sizes), summed over the rebuild."""
    (n1, t1), (n2, t2) = add_small, add_large
    slope = max(0.0, (t2 - t1) / (n2 - n1))
    fixed = rebuild_seconds / rebuild_at
    growth = slope * (target**2 - rebuild_at**2) / 2
    return fixed * target + growth


def _seconds(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
