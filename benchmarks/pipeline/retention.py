"""A simulated year of one busy store through the matcher's visitor shard, with retention.

Every day ``--per-day`` visitors come in (spread over opening hours, event time); a share of
them (``--returning``) are people seen before, drawn uniformly from everyone seen so far, the
rest strangers. Who is who is known (synthetic encodings, :mod:`benchmarks.synthetic`), so no
search is run: a known visitor still held is *sighted* (which re-writes its record when it
moves ``last_seen`` by a day), anyone else is minted. Before each visit the shard retires what
the matcher would (``VisitorShards.retire``, at most 16 per visit). The shard is the real one:
:class:`~facestream.services.matcher.shards.VisitorShards` and its Faiss gallery (flat).

Printed: per period, the visitors held at its end, the most held, what was minted, retired and
written to ``identities.v1``, against the bound: the unique visitors of the last retention
period (at most traffic x retention).

    python -m benchmarks.pipeline.retention [--days 365] [--per-day 1000] [--returning 0.3]

Needs the local broker only to construct the shards' changelog reader (nothing is read).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta

import numpy as np

from benchmarks.synthetic import Synthesizer
from facestream.core.gallery import GalleryConfig
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import IdentityRecord, vector_to_wire
from facestream.services.matcher.decide import MAX_RETIRED_PER_DECISION
from facestream.services.matcher.settings import MatcherSettings
from facestream.services.matcher.shards import VisitorShards

STORE = "busy-store"
START = datetime(2025, 1, 1, tzinfo=UTC)
OPENING = timedelta(hours=9)
OPEN_FOR = 12 * 3600


def _shards(retention: timedelta) -> VisitorShards:
    pipeline = PipelineSettings()
    return VisitorShards(
        kafka=pipeline,
        topic=f"bench-retention-{uuid.uuid4().hex[:6]}",
        config=GalleryConfig(index="flat"),
        neighbours={},
        on_erased=lambda _key: None,
        client_id="bench-retention",
        retention=retention,
    )


def simulate(days: int, per_day: int, returning: float, retention_days: int, seed: int) -> None:
    """Run the year, printing one line per period and a summary."""
    rng = np.random.default_rng(seed)
    synth = Synthesizer(seed=seed)
    retention = timedelta(days=retention_days)
    shards = _shards(retention)
    centres: list[np.ndarray] = []
    face_of: dict[int, str] = {}  # person -> FaceId held (or last held)
    recent: deque[set[int]] = deque(maxlen=retention_days + 1)  # people seen, per day
    period = max(1, days // 24)
    totals = {"minted": 0, "retired": 0, "written": 0}
    window = {"minted": 0, "retired": 0, "written": 0}
    most = 0
    started = time.perf_counter()
    print(
        f"{per_day} visitors/day, {returning:.0%} returning, retention {retention_days} days, "
        f"bound = traffic x retention = {per_day * retention_days:,}"
    )
    print(
        f"{'day':>5} {'held':>8} {'max':>8} {'unique in window':>17} "
        f"{'minted':>8} {'retired':>8} {'written':>8} {'s':>7}"
    )
    for day in range(days):
        back = round(per_day * returning) if centres else 0
        people = list(rng.integers(0, len(centres), back)) if back else []
        fresh = synth.centres(per_day - back)
        people += range(len(centres), len(centres) + len(fresh))
        centres.extend(fresh)
        photos = synth.photos(np.stack([centres[p] for p in people]))
        times = np.sort(rng.integers(0, OPEN_FOR, len(people)))
        recent.append(set(people))
        for person, photo, second in zip(people, photos, times, strict=True):
            at = START + timedelta(days=day) + OPENING + timedelta(seconds=int(second))
            retired = shards.retire(STORE, at, MAX_RETIRED_PER_DECISION)
            window["retired"] += len(retired)
            face_id = face_of.get(person)
            if face_id is not None and shards.sample_count(STORE, face_id):
                if shards.sighted(STORE, face_id, at) is not None:
                    window["written"] += 1
                continue
            face_id = f"F{person}-{day}"
            face_of[person] = face_id
            shards.mint(
                0,
                IdentityRecord.minted(
                    face_id=face_id,
                    store_id=STORE,
                    encoding=vector_to_wire(photo),
                    first_seen=at,
                    observation_id=f"{face_id}:0",
                ),
            )
            window["minted"] += 1
            window["written"] += 1
            most = max(most, shards.visitors)
        if (day + 1) % period == 0 or day + 1 == days:
            unique = len(set().union(*recent))
            print(
                f"{day + 1:>5} {shards.visitors:>8,} {most:>8,} {unique:>17,} "
                f"{window['minted']:>8,} {window['retired']:>8,} {window['written']:>8,} "
                f"{time.perf_counter() - started:>7.0f}",
                flush=True,
            )
            for key in totals:
                totals[key] += window[key]
                window[key] = 0
    shards.close()
    print(
        f"year: {totals['minted']:,} minted, {totals['retired']:,} retired, "
        f"{totals['written']:,} records written ({totals['written'] / days:,.0f}/day); "
        f"at most {most:,} visitors held, bound {per_day * retention_days:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=1000)
    parser.add_argument("--returning", type=float, default=0.3)
    parser.add_argument(
        "--retention-days", type=int, default=MatcherSettings().visitor_retention_days
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    simulate(args.days, args.per_day, args.returning, args.retention_days, args.seed)


if __name__ == "__main__":
    main()
