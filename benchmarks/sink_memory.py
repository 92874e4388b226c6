"""Redis memory of the sink per event: per-event ``seen:`` keys (before) against offsets and a
bounded window of event ids per store (now).

On a Redis server of its own (Debian's ``redis-server`` on a free port of 127.0.0.1, no
persistence, stopped at the end), the sink's real :class:`~facestream.services.sink.store.
Applier` applies N synthetic match events (stores round-robin over partitions, each event with
its Kafka position, batches of 200). Then:

* **now**: ``INFO memory`` ``used_memory`` and the key count as the sink left them, and
  ``MEMORY USAGE`` of the deduplication state (every store's ``offsets`` and ``recent``);
* **before**: the same data with the deduplication state of earlier sinks instead: the
  ``offsets`` and ``recent`` keys deleted and one ``P:{S}:seen:<event id>`` key per event
  written as their script did (``SET ... EX`` 7 days).

Visits, day sets and counters are the same in both, so the difference is the deduplication
state. Run from the project root (about a minute)::

    .venv/bin/python -m benchmarks.sink_memory [--events 20000,100000] [--stores 4]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from facestream.devstack.redis_cluster import local_redis
from facestream.runtime.redis_clients import redis_client, stack_redis
from facestream.schemas import Box, MatchEvent, derived_id
from facestream.services.sink.settings import SinkSettings
from facestream.services.sink.store import Applier, Position, StoreKeys, plan

PREFIX = "fs"
TOPIC = "matches.v1"
PARTITIONS = 4
PERSONS_PER_STORE = 500
T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
SEEN_TTL = 7 * 24 * 3600


@dataclass(frozen=True)
class Row:
    events: int
    stores: int
    layout: str
    keys: int
    used_memory: int
    dedup_bytes: int

    def line(self) -> str:
        return (
            f"{self.events:>8} {self.stores:>6}  {self.layout:<22} {self.keys:>8} "
            f"{self.used_memory / 2**20:>10.1f} {self.used_memory / self.events:>12.0f} "
            f"{self.dedup_bytes / 2**20:>11.2f} {self.dedup_bytes / self.events:>12.1f}"
        )


HEADER = (
    f"{'events':>8} {'stores':>6}  {'dedup layout':<22} {'keys':>8} {'used MiB':>10} "
    f"{'bytes/event':>12} {'dedup MiB':>11} {'dedup B/ev':>12}"
)


def events(n: int, stores: int, seed: int = 7) -> Iterator[tuple[Position, MatchEvent]]:
    """``n`` matches over ``stores`` stores and 3 days, with the position the sink reads them
    at (a store's partition is fixed, offsets increase per partition)."""
    rng = random.Random(seed)
    offsets = [0] * PARTITIONS
    for i in range(n):
        store = f"store-{rng.randrange(stores)}"
        who = f"p{rng.randrange(PERSONS_PER_STORE)}"
        at = T0 + timedelta(seconds=i * 3 * 24 * 3600 // n)
        obs = derived_id(store, who, str(i))
        partition = int(store.split("-")[1]) % PARTITIONS
        member = who < "p05"
        yield (
            Position(TOPIC, partition, offsets[partition]),
            MatchEvent(
                event_id=derived_id("match", obs),
                kind="member" if member else "returning",
                member_id=who if member else None,
                face_id=None if member else who,
                store_id=store,
                camera_id=rng.choice(("door", "aisle", "till")),
                captured_at=at,
                frame_id=f"f-{obs[:8]}",
                observation_id=f"{obs}:0",
                box=Box(top=0, right=10, bottom=10, left=0),
                model_version="bench",
            ),
        )
        offsets[partition] += 1


def measure(r: redis.Redis, n: int, stores: int, sink: SinkSettings) -> list[Row]:
    """Apply ``n`` events on an empty server; the memory now, then with seen: keys instead."""
    r.flushall()
    base = int(r.info("memory")["used_memory"])
    applier = Applier(r, PREFIX)
    batch: list[Any] = []
    ids: list[tuple[str, str]] = []
    for position, event in events(n, stores):
        batch.append(plan(event, sink, PREFIX, position))
        ids.append((event.store_id, event.event_id))
        if len(batch) == 200:
            applier.apply(batch)
            batch = []
    applier.apply(batch)
    names = sorted({s for s, _ in ids})
    state = [k for s in names for k in (StoreKeys(PREFIX, s).offsets, StoreKeys(PREFIX, s).recent)]

    def row(layout: str, dedup: int) -> Row:
        used = int(r.info("memory")["used_memory"]) - base
        return Row(n, stores, layout, int(r.dbsize()), used, dedup)

    now = row(
        f"offsets + {sink.dedup_window_events} ids", sum(r.memory_usage(k) or 0 for k in state)
    )
    r.delete(*state)
    without = int(r.info("memory")["used_memory"])
    pipe = r.pipeline(transaction=False)
    for store, event_id in ids:
        pipe.set(StoreKeys(PREFIX, store).seen(event_id), "1", ex=SEEN_TTL)
    pipe.execute()
    seen = int(r.info("memory")["used_memory"]) - without
    return [row("seen: key per event", seen), now]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default="20000,100000", help="comma-separated sizes")
    parser.add_argument("--stores", type=int, default=4)
    parser.add_argument("--window", type=int, default=SinkSettings().dedup_window_events)
    args = parser.parse_args(argv)
    sink = SinkSettings(dedup_window_events=args.window)
    sizes = [int(x) for x in args.events.split(",")]
    with (
        tempfile.TemporaryDirectory(prefix="facestream-sink-memory-") as tmp,
        local_redis(Path(tmp), nodes=1, cluster=False) as server,
    ):
        r = redis_client(stack_redis(server.url), decode_responses=True)
        version = r.info("server")["redis_version"]
        print(f"Redis {version}, {PARTITIONS} partitions, {PERSONS_PER_STORE} persons a store")
        print(HEADER)
        for n in sizes:
            for result in measure(r, n, args.stores, sink):
                print(result.line(), flush=True)
        r.close()


if __name__ == "__main__":
    main()
