"""How long a matcher takes to rebuild its state from the changelogs, on the real broker.

A store shard is rebuilt from ``identities.v1`` when its partition is assigned
(``VisitorShards.own``), the member tier from ``members.v1`` at start (``MemberTier.start``).
Both apply the records one by one and add the samples to the gallery in bulk once the read is
done (one ``Gallery.add_many``). Besides the whole take-over, the shard's time is split into its
parts, each measured alone on the same records: fetching the partition with the changelog
reader (the broker and kafka-python's record parsing), decoding the values
(``IdentityRecord.read``, then ``.vectors``), and one ``add_many`` of the decoded samples into
an empty gallery; what is left of the take-over is the per-record bookkeeping in between.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import fmt, markdown_table
from benchmarks.pipeline import workers
from benchmarks.pipeline.matcher import PER_PERSON, STORE
from benchmarks.pipeline.synthetic import EncodingModel, lfw_encodings
from facestream.core.engine import FaceEngine
from facestream.core.gallery import Gallery, GalleryConfig, Identity
from facestream.devstack.workers import worker_env
from facestream.runtime import kafka_clients
from facestream.runtime.runner import KafkaRecord
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import IdentityRecord, MemberRecord, derived_id, vector_to_wire
from facestream.schemas.keys import identity_key, partition_for
from facestream.services.matcher.changelog import ChangelogReader
from facestream.services.matcher.member_tier import MemberTier
from facestream.services.matcher.shards import VisitorShards
from facestream.services.matcher.snapshots import SnapshotStore, read

TAIL = 0.01
"""Visitors minted after the snapshot, as a share of the shard (an hour of a day's traffic is
about 4% of a day's visitors; a shard holds months of them)."""

CHUNK = 50_000
"""Visitors generated and sent at a time (a 1e6-record changelog is never all in memory)."""


def measure_rebuild(
    pipeline: PipelineSettings,
    model: EncodingModel,
    visitors: int,
    partitions: int,
    rng: np.random.Generator,
    timeout: float,
) -> dict[str, float]:
    """Seconds for a matcher to build a store shard of ``visitors`` from ``identities.v1``
    (``VisitorShards.own``, what an assignment triggers), split into fetch, decode and gallery
    build, and to build a member tier of ``visitors // 3`` members with 3 samples each from
    ``members.v1`` (``MemberTier.start``)."""
    p = partition_for(STORE, partitions)
    members = visitors // PER_PERSON
    _publish(pipeline, model, visitors, members, p, rng)
    shard_s = _own(pipeline, p, visitors, timeout)
    split = _split(pipeline, p, timeout)
    snap = _from_snapshot(pipeline, model, visitors, p, rng, timeout)
    tier = MemberTier(
        kafka=pipeline,
        topic=pipeline.topics.members,
        config=GalleryConfig(),
        on_erased=_ignore,
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
        **split,
        **snap,
        "members": members,
        "member_samples": members * PER_PERSON,
        "member_seconds": member_s,
    }


def measure_sizes(
    base: PipelineSettings, engine: FaceEngine, sizes: Sequence[int], timeout: float = 1800
) -> list[dict[str, float]]:
    """:func:`measure_rebuild` at each size, each on topics of its own (deleted afterwards),
    with encodings modelled on 200 real LFW ones as in the matcher section."""
    rng = np.random.default_rng(7)
    model = EncodingModel.fit(lfw_encodings(engine, 200))
    out = []
    for size in sizes:
        with workers.fresh_pipeline(base, "rebuild") as settings:
            out.append(
                measure_rebuild(settings, model, size, workers.PARTITIONS, rng, timeout=timeout)
            )
    return out


def report(rows: Sequence[dict[str, float]]) -> str:
    """The take-over tables of :func:`measure_sizes`: whole rebuilds and the shard's split,
    then the take-over from a snapshot."""
    table = []
    for r in rows:
        parts = r["fetch_seconds"] + r["decode_seconds"] + r["gallery_seconds"]
        table.append(
            [
                f"{r['visitors']:,.0f}",
                fmt(r["shard_seconds"], 1),
                fmt(r["shard_seconds"] / r["visitors"] * 1e3, 3),
                fmt(r["fetch_seconds"], 1),
                f"{fmt(r['decode_seconds'], 1)} ({fmt(r['read_seconds'], 1)} + "
                f"{fmt(r['vectors_seconds'], 1)})",
                fmt(r["gallery_seconds"], 1),
                fmt(max(r["shard_seconds"] - parts, 0.0), 1),
                f"{r['members']:,.0f} ({r['member_samples']:,.0f} samples)",
                fmt(r["member_seconds"], 1),
            ]
        )
    whole = markdown_table(
        [
            "identities.v1 records",
            "shard take-over s (VisitorShards.own)",
            "ms per record",
            "of which fetch s",
            "decode s (IdentityRecord.read + .vectors)",
            "gallery add_many s",
            "rest s (take-over minus the parts)",
            "members.v1 records",
            "member tier s (MemberTier.start)",
        ],
        table,
    )
    snapshots = markdown_table(
        [
            "identities.v1 records",
            "snapshot MB",
            "facestream snapshot s (from the whole changelog)",
            "its peak RSS MB",
            "snapshot file read s",
            "tail records after it",
            "take-over from snapshot + tail s",
            "take-over from the whole changelog s",
            "whole / snapshot",
            "facestream snapshot again s (from its snapshot + tail)",
            "its peak RSS MB",
        ],
        [
            [
                f"{r['visitors']:,.0f}",
                fmt(r["snapshot_bytes"] / 1e6, 1),
                fmt(r["snapshot_job_seconds"], 1),
                fmt(r["snapshot_job_peak_bytes"] / 1e6, 0),
                fmt(r["snapshot_read_seconds"], 2),
                f"{r['tail']:,.0f}",
                fmt(r["snapshot_takeover_seconds"], 2),
                fmt(r["shard_seconds"], 1),
                fmt(r["shard_seconds"] / r["snapshot_takeover_seconds"], 1),
                fmt(r["snapshot_job_again_seconds"], 1),
                fmt(r["snapshot_job_again_peak_bytes"] / 1e6, 0),
            ]
            for r in rows
        ],
    )
    return f"{whole}\n\nFrom a snapshot (FACESTREAM_MATCHER_SNAPSHOT_DIR):\n\n{snapshots}"


def _publish(
    pipeline: PipelineSettings,
    model: EncodingModel,
    visitors: int,
    members: int,
    partition: int,
    rng: np.random.Generator,
    first: int = 0,
) -> None:
    """Write ``visitors`` minted one-sample visitors (numbered from ``first``) of
    :data:`STORE` and ``members`` members with :data:`PER_PERSON` samples each. A producer
    batching more than the stages' own does: only the changelogs' contents matter here, not
    how fast they were written."""
    topics = pipeline.topics
    producer = kafka_clients.producer(pipeline, acks=1, linger_ms=50, batch_size=1 << 20)
    now = datetime.now(UTC)
    try:
        for start in range(0, visitors, CHUNK):
            count = min(CHUNK, visitors - start)
            for i, v in enumerate(model.photos(model.people(count, rng), rng), first + start):
                face_id = derived_id("face", f"rebuild-{i}")
                identity = IdentityRecord.minted(
                    face_id=face_id,
                    store_id=STORE,
                    encoding=vector_to_wire(v),
                    first_seen=now,
                    observation_id=f"rebuild-{i}:0",
                )
                key = identity_key(STORE, face_id).encode()
                producer.send(topics.identities, identity.to_bytes(), key, partition=partition)
        for start in range(0, members, CHUNK):
            count = min(CHUNK, members - start)
            vectors, owners, _ = model.gallery(count * PER_PERSON, PER_PERSON, rng)
            for m in range(count):
                record = MemberRecord(
                    member_id=f"m{start + m}",
                    encodings=[vector_to_wire(v) for v in vectors[owners == m]],
                    enrolled_at=now,
                )
                producer.send(topics.members, record.to_bytes(), f"m{start + m}".encode())
        producer.flush(timeout=600)
    finally:
        producer.close()


def _own(
    pipeline: PipelineSettings,
    partition: int,
    visitors: int,
    timeout: float,
    snapshots: SnapshotStore | None = None,
) -> float:
    """Seconds of ``VisitorShards.own([partition])`` in a matcher following every partition
    (from the partition's snapshot when ``snapshots`` has one)."""
    shards = VisitorShards(
        kafka=pipeline,
        topic=pipeline.topics.identities,
        config=GalleryConfig(),
        neighbours={},
        on_erased=_ignore,
        client_id="bench-rebuild-identities",
        snapshots=snapshots,
    )
    try:
        shards.start(timeout)
        seconds = _seconds(lambda: shards.own([partition], timeout))
        if snapshots is not None and not shards.from_snapshot(partition):
            raise RuntimeError("the snapshot was not used (see the log)")
        if shards.visitors != visitors:
            raise RuntimeError(f"shard rebuilt with {shards.visitors} visitors, not {visitors}")
        return seconds
    finally:
        shards.close()


def _from_snapshot(
    pipeline: PipelineSettings,
    model: EncodingModel,
    visitors: int,
    partition: int,
    rng: np.random.Generator,
    timeout: float,
) -> dict[str, float]:
    """The same partition through ``facestream snapshot`` (a process of its own, as the
    CronJob runs it: its time and peak memory), written from the whole changelog; then
    :data:`TAIL` of its size minted after the snapshot (an hourly job's tail, generously); the
    partition taken over from the snapshot and that tail; and the job again, now from its
    previous snapshot (an hourly run's cost). The snapshot file is also read once alone."""
    tail = max(1, int(visitors * TAIL))
    with tempfile.TemporaryDirectory(prefix="bench-snapshots-") as folder:
        store = SnapshotStore(Path(folder))
        first = _job(pipeline, Path(folder), partition, timeout, visitors)
        path = store.path(pipeline.topics.identities, partition)
        size = path.stat().st_size
        read_s = _seconds(lambda: read(path))
        _publish(pipeline, model, tail, 0, partition, rng, first=visitors)
        took = _own(pipeline, partition, visitors + tail, timeout, store)
        again = _job(pipeline, Path(folder), partition, timeout, visitors + tail)
    return {
        "snapshot_job_seconds": first["seconds"],
        "snapshot_job_peak_bytes": first["peak_bytes"],
        "snapshot_bytes": size,
        "snapshot_read_seconds": read_s,
        "tail": tail,
        "snapshot_takeover_seconds": took,
        "snapshot_job_again_seconds": again["seconds"],
        "snapshot_job_again_peak_bytes": again["peak_bytes"],
    }


def _job(
    pipeline: PipelineSettings, folder: Path, partition: int, timeout: float, visitors: int
) -> dict[str, float]:
    """``facestream snapshot --partition P`` in a process of its own: seconds and peak RSS."""
    command = [
        str(Path(sys.executable).parent / "facestream"),
        "snapshot",
        "--dir",
        str(folder),
        "--partition",
        str(partition),
        "--timeout",
        str(timeout),
        "--json",
    ]
    started = time.perf_counter()
    job = subprocess.run(
        command, env=worker_env(pipeline), capture_output=True, timeout=timeout, check=False
    )
    seconds = time.perf_counter() - started
    if job.returncode != 0:
        raise RuntimeError(f"facestream snapshot exited {job.returncode}: {job.stderr[-500:]!r}")
    report = json.loads(job.stdout)
    (written,) = report["snapshots"]
    if written["visitors"] != visitors:
        raise RuntimeError(f"snapshot of {written['visitors']} visitors, not {visitors}")
    # The job's own VmHWM: getrusage's figure for a child started from this (large) process
    # includes this process's memory at the fork.
    return {"seconds": seconds, "peak_bytes": float(report["peak_rss_bytes"] or "nan")}


def _split(pipeline: PipelineSettings, partition: int, timeout: float) -> dict[str, float]:
    """Each part of a take-over alone, on the partition's records: fetch, decode, gallery."""
    values: list[bytes | None] = []

    def keep(record: KafkaRecord) -> None:
        values.append(record.value)

    reader = ChangelogReader(
        pipeline, pipeline.topics.identities, keep, client_id="bench-rebuild-fetch"
    )
    try:
        reader.assign([partition])
        reader.rewind([partition])
        fetch_s = _seconds(lambda: reader.catch_up([partition], timeout))
    finally:
        reader.close()
    started = time.perf_counter()
    records = [IdentityRecord.read(v) for v in values]
    read_s = time.perf_counter() - started
    values.clear()
    started = time.perf_counter()
    vectors = [r.vectors for r in records]
    vectors_s = time.perf_counter() - started
    faces = [r.face_id for r in records]
    records.clear()
    gallery = Gallery(GalleryConfig())
    gallery_s = _seconds(
        lambda: gallery.add_many(
            (Identity(f, kind="visitor"), v) for f, v in zip(faces, vectors, strict=True)
        )
    )
    return {
        "fetch_seconds": fetch_s,
        "decode_seconds": read_s + vectors_s,
        "read_seconds": read_s,
        "vectors_seconds": vectors_s,
        "gallery_seconds": gallery_s,
    }


def _ignore(_subject: str) -> None:
    pass


def _seconds(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
