"""What a shard snapshot file costs without Kafka: writing it, reading it back (checksum, header,
samples) and loading it into a store shard (``StoreShard.load``: per-visitor state, then one
``add_many`` into the matcher's default gallery), at each size.

    python -m benchmarks.pipeline.snapshot_file --sizes 100000 1000000

Visitors have one sample each, as the take-over benchmark's (``--rebuild-sizes``), with ids
and observation ids of the lengths the matcher writes; the samples are random unit vectors
(the file does not care what they are). The take-over from a snapshot on the real broker is
measured by ``python -m benchmarks.pipeline --rebuild-sizes``; this splits its file part.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from benchmarks.common import fmt, markdown_table
from facestream.core.engine import MODEL_VERSION
from facestream.core.gallery import GalleryConfig
from facestream.services.matcher.snapshots import Snapshot, StoreVisitors, read, write
from facestream.services.matcher.visitors import StoreShard, VisitorState

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def synthetic(visitors: int, rng: np.random.Generator) -> Snapshot:
    """One store's ``visitors`` one-sample visitors, seen over 90 days."""
    vectors = rng.standard_normal((visitors, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    seen = rng.integers(0, 90 * 24 * 3600, visitors)
    states = [
        VisitorState(
            str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | i)),
            T0 + timedelta(seconds=int(s)),
            T0 + timedelta(seconds=int(s)),
            (f"store-1/cam-1/{i:012d}:0",),
        )
        for i, s in enumerate(seen)
    ]
    return Snapshot(
        topic="identities.v1",
        partition=0,
        partitions=4,
        offset=visitors,
        written_at=datetime.now(UTC),
        model_version=MODEL_VERSION,
        stores=[StoreVisitors("store-1", states, vectors)],
    )


def measure(visitors: int, rng: np.random.Generator) -> dict[str, float]:
    snapshot = synthetic(visitors, rng)
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-file-") as folder:
        started = time.perf_counter()
        path = write(Path(folder), snapshot)
        write_s = time.perf_counter() - started
        size = path.stat().st_size
        del snapshot
        started = time.perf_counter()
        back = read(path)
        read_s = time.perf_counter() - started
    (store,) = back.stores
    shard = StoreShard(GalleryConfig(), store.store_id, 0)
    started = time.perf_counter()
    shard.load(store.visitors, store.vectors)
    load_s = time.perf_counter() - started
    if len(shard) != visitors:
        raise RuntimeError(f"loaded {len(shard)} visitors, not {visitors}")
    return {
        "visitors": visitors,
        "bytes": size,
        "write_seconds": write_s,
        "read_seconds": read_s,
        "load_seconds": load_s,
    }


def report(rows: Sequence[dict[str, float]]) -> str:
    return markdown_table(
        ["visitors", "file MB", "write s", "read s", "StoreShard.load s", "read + load s"],
        [
            [
                f"{r['visitors']:,.0f}",
                fmt(r["bytes"] / 1e6, 1),
                fmt(r["write_seconds"], 2),
                fmt(r["read_seconds"], 2),
                fmt(r["load_seconds"], 2),
                fmt(r["read_seconds"] + r["load_seconds"], 2),
            ]
            for r in rows
        ],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(3)
    print(report([measure(size, rng) for size in args.sizes]))


if __name__ == "__main__":
    main()
