"""Taking a partition over from its snapshot (``facestream snapshot``), on the real broker: the
shards must be exactly those read from the partition's start, only the tail after the snapshot
is read, a snapshot that cannot be trusted is not used, and erasure reaches the snapshot files.

Encodings are random unit vectors, as in :mod:`tests.services.matcher.test_takeover`: what is
compared is two matchers' answers, not a face decision.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from facestream.admin.audit import audit
from facestream.admin.erasure import erase
from facestream.core.engine import MODEL_VERSION
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas.keys import RETIRED, identity_key
from facestream.services.matcher import snapshot_job, snapshots
from facestream.services.matcher.shards import VisitorShards
from facestream.services.matcher.snapshots import (
    Snapshot,
    SnapshotError,
    SnapshotStore,
    StoreVisitors,
    read,
    write,
)
from facestream.services.matcher.visitors import VisitorState
from tests.kafka_fixtures import PARTITIONS, pipeline_env
from tests.services.matcher.test_matcher import T0
from tests.services.matcher.test_takeover import STORES, _near, _record, _unit
from tests.services.matcher.test_takeover import _shards as takeover_shards
from tests.services.matcher.test_takeover import closing as closing  # the fixture

KEY = identity_key


def _outcome(outcome: str) -> float:
    found = REGISTRY.get_sample_value("facestream_matcher_snapshots_total", {"outcome": outcome})
    return found or 0.0


def _shards(
    pipeline: PipelineSettings, name: str, store: SnapshotStore | None = None
) -> VisitorShards:
    return takeover_shards(pipeline, f"snapshot-{name}", [], store)


def _send(pipeline: PipelineSettings, records: list[tuple[str, bytes | None, list[Any]]]) -> None:
    producer = make_producer(pipeline)
    try:
        for key, value, headers in records:
            producer.send(
                pipeline.topics.identities, value, key.encode(), headers=headers, partition=0
            ).get(timeout=20)
    finally:
        producer.close()


def _counting(shards: VisitorShards) -> list[int]:
    """Count the changelog records ``shards`` applies from now on (in a one-item list)."""
    count = [0]
    apply = shards.reader._apply

    def counted(record: Any) -> None:
        count[0] += 1
        apply(record)

    shards.reader._apply = counted
    return count


def _same(one: VisitorShards, other: VisitorShards, faces: dict[str, list[str]]) -> None:
    """Both hold the same visitors, records, answers and erasure memory."""
    assert one.stores() == other.stores()
    assert one.visitors == other.visitors == sum(len(f) for f in faces.values())
    for store, held in faces.items():
        for face in held:
            assert one.record(store, face).to_bytes() == other.record(store, face).to_bytes()
    probes = [(store, _unit()) for store in STORES for _ in range(5)]
    probes += [
        (store, _near(vector))
        for store, held in faces.items()
        for face in held
        for vector in one.record(store, face).vectors
    ]
    assert [one.identify(s, v) for s, v in probes] == [other.identify(s, v) for s, v in probes]
    assert one.take_resurrected() == other.take_resurrected()


def test_a_partition_taken_over_from_its_snapshot_is_the_one_read_from_its_start(
    pipeline: PipelineSettings, tmp_path: Path, closing: list[Any]
) -> None:
    a, b = STORES
    looks = {face: _unit() for face in "ABCDEFG"}
    learned = _near(looks["A"])
    # Before the snapshot: visitors of both stores, one learning, one erased and written again
    # after its tombstone (the snapshot must remember the tombstone), one retired.
    _send(
        pipeline,
        [
            (KEY(a, "A"), _record(a, "A", [looks["A"]]), []),
            (KEY(a, "B"), _record(a, "B", [looks["B"]]), []),
            (KEY(b, "C"), _record(b, "C", [looks["C"]]), []),
            (KEY(a, "A"), _record(a, "A", [looks["A"], learned]), []),
            (KEY(b, "C"), None, []),
            (KEY(a, "D"), _record(a, "D", [looks["D"]]), []),
            (KEY(a, "D"), None, [RETIRED]),
            (KEY(b, "E"), _record(b, "E", [looks["E"]]), []),
        ],
    )
    store = SnapshotStore(tmp_path)
    first = snapshot_job.write_snapshots(pipeline, store, [0], timeout=30)
    assert [(w.partition, w.offset, w.visitors, w.samples, w.previous) for w in first] == [
        (0, 8, 3, 4, False)
    ]
    assert first[0].path == store.path(pipeline.topics.identities, 0)
    held = read(store.path(pipeline.topics.identities, 0))
    assert held.tombstones == [(KEY(b, "C"), 4)] and held.holds(KEY(a, "A"))
    assert not held.holds(KEY(b, "C")) and not held.holds(KEY(a, "D"))

    # The tail: C written again after its tombstone (refused, to tombstone again), A seen a
    # day later, B erased, F and G minted.
    tail: list[tuple[str, bytes | None, list[Any]]] = [
        (KEY(b, "C"), _record(b, "C", [looks["C"]]), []),
        (KEY(a, "A"), _record(a, "A", [looks["A"], learned], days=1), []),
        (KEY(a, "B"), None, []),
        (KEY(a, "F"), _record(a, "F", [looks["F"]]), []),
        (KEY(b, "G"), _record(b, "G", [looks["G"]]), []),
    ]
    _send(pipeline, tail)

    used = _outcome("used")
    from_snapshot = _shards(pipeline, "from-snapshot", store)
    closing.append(from_snapshot)
    from_snapshot.start(timeout=20)
    applied = _counting(from_snapshot)
    from_snapshot.own([0], timeout=20)
    assert from_snapshot.from_snapshot(0)
    assert _outcome("used") == used + 1
    assert applied[0] == len(tail)  # the tail only

    from_start = _shards(pipeline, "from-start")
    closing.append(from_start)
    from_start.start(timeout=20)
    everything = _counting(from_start)
    from_start.own([0], timeout=20)
    assert not from_start.from_snapshot(0) and everything[0] == 8 + len(tail)

    _same(from_snapshot, from_start, {a: ["A", "F"], b: ["E", "G"]})
    assert from_snapshot.record(a, "A").seen == T0 + timedelta(days=1)
    assert from_snapshot.erased(b, "C") and from_snapshot.erased(a, "B")

    # The next run starts from the first snapshot and reads its tail only.
    second = snapshot_job.write_snapshots(pipeline, store, [0], timeout=30)
    assert [(w.offset, w.visitors, w.samples, w.previous) for w in second] == [(13, 4, 5, True)]


def test_a_snapshot_that_cannot_be_trusted_is_not_used(
    pipeline: PipelineSettings, tmp_path: Path, closing: list[Any]
) -> None:
    a, _ = STORES
    _send(pipeline, [(KEY(a, f"V{i}"), _record(a, f"V{i}", [_unit()]), []) for i in range(3)])
    store = SnapshotStore(tmp_path)
    snapshot_job.write_snapshots(pipeline, store, [0], timeout=30)
    path = store.path(pipeline.topics.identities, 0)
    good = path.read_bytes()

    def taken_over(outcome: str, use: SnapshotStore = store) -> None:
        before = _outcome(outcome)
        shards = _shards(pipeline, f"refused-{outcome}", use)
        closing.append(shards)
        shards.start(timeout=20)
        shards.own([0], timeout=20)
        assert not shards.from_snapshot(0)
        assert shards.visitors == 3  # read from the start instead
        assert _outcome(outcome) == before + 1

    # One flipped byte in the samples, then a file cut short.
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0x40
    path.write_bytes(bytes(damaged))
    taken_over("corrupt")
    path.write_bytes(good[: len(good) - 100])
    taken_over("corrupt")
    path.write_bytes(good)
    taken_over("stale", SnapshotStore(tmp_path, max_age=timedelta(microseconds=1)))
    path.unlink()
    taken_over("missing")


def _snapshot(**changes: Any) -> Snapshot:
    vectors = np.stack([_unit(), _unit()])
    fields: dict[str, Any] = {
        "topic": "x.identities.v1",
        "partition": 1,
        "partitions": PARTITIONS,
        "offset": 10,
        "written_at": datetime.now(UTC),
        "model_version": MODEL_VERSION,
        "stores": [
            StoreVisitors(
                "s1",
                [VisitorState("f1", T0, T0 + timedelta(hours=1), ("o1", "o2"))],
                vectors,
            )
        ],
    }
    return Snapshot(**{**fields, **changes})


def test_snapshot_files_round_trip_and_are_refused_when_they_do_not_fit(tmp_path: Path) -> None:
    written = _snapshot()
    path = write(tmp_path, written)
    assert path.stat().st_mode & 0o777 == 0o600  # faces: the owner only
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left
    back = read(path)
    assert back.stores[0].visitors == written.stores[0].visitors
    assert back.stores[0].vectors.tolist() == written.stores[0].vectors.tolist()
    assert (back.offset, back.written_at, back.partitions) == (
        written.offset,
        written.written_at,
        written.partitions,
    )
    store = SnapshotStore(tmp_path)
    fits: dict[str, Any] = {
        "partitions": PARTITIONS,
        "model_version": MODEL_VERSION,
        "first_offset": 0,
    }
    assert store.usable("x.identities.v1", 1, **fits) is not None
    refused = [
        ("mismatch", {**fits, "partitions": PARTITIONS * 2}),
        ("model_mismatch", {**fits, "model_version": "another-encoder"}),
        ("stale", {**fits, "first_offset": 11}),  # the records it skipped are gone
    ]
    for outcome, args in refused:
        before = _outcome(outcome)
        assert store.usable("x.identities.v1", 1, **args) is None
        assert _outcome(outcome) == before + 1
    write(tmp_path, _snapshot(written_at=datetime.now(UTC) - timedelta(hours=25)))
    assert store.usable("x.identities.v1", 1, **fits) is None
    path.write_bytes(b"FSSNAP1\n" + b"\0" * 100)
    with pytest.raises(SnapshotError, match="checksum"):
        read(path)


def test_erasure_deletes_the_snapshot_and_a_job_racing_it_writes_again(
    pipeline: PipelineSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = STORES
    faces = ["K", "L", "M"]
    _send(pipeline, [(KEY(a, f), _record(a, f, [_unit()]), []) for f in faces])
    store = SnapshotStore(tmp_path)
    snapshot_job.write_snapshots(pipeline, store, [0], timeout=30)
    path = store.path(pipeline.topics.identities, 0)

    # The audit names the snapshot while it holds the visitor.
    before = audit(KEY(a, "K"), pipeline, timeout=20, snapshots=store)
    assert [(p.place, p.live) for p in before.places if p.place == str(path)] == [(str(path), True)]
    erased = erase(KEY(a, "K"), pipeline, timeout=5, snapshots=store)
    assert erased.snapshots_removed == (path,) and not path.exists()
    after = audit(KEY(a, "K"), pipeline, timeout=20, snapshots=store)
    assert [(p.place, p.live, p.detail) for p in after.places if p.place == str(path)] == [
        (str(path), False, "no snapshot")
    ]

    # A job that wrote L's snapshot just before L's erasure deleted the file: the job reads on,
    # finds the tombstone and writes the file again, without L.
    written = snapshots.write

    def erasure_races(directory: Path, snapshot: Snapshot) -> Path:
        done = written(directory, snapshot)
        if snapshot.holds(KEY(a, "L")):
            _send(pipeline, [(KEY(a, "L"), None, [])])
        return done

    monkeypatch.setattr(snapshots, "write", erasure_races)
    again = snapshot_job.write_snapshots(pipeline, store, [0], timeout=30)
    assert [(w.visitors, w.previous) for w in again] == [(1, False)]  # M; K's file was deleted
    final = read(path)
    assert not final.holds(KEY(a, "L")) and final.holds(KEY(a, "M"))
    assert (KEY(a, "L"), 4) in final.tombstones

    # The CLI writes every partition (the others empty) and prints what it wrote.
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "facestream"),
            "snapshot",
            "--dir",
            str(tmp_path),
            "--json",
        ],
        env=pipeline_env(pipeline),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout)
    assert printed["peak_rss_bytes"] > 10 * 2**20  # the job's own memory, for sizing it
    listed = printed["snapshots"]
    assert [(s["partition"], s["visitors"], s["previous"]) for s in listed] == [
        (0, 1, True),
        *[(p, 0, False) for p in range(1, PARTITIONS)],
    ]
