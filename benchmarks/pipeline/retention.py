"""A simulated year of one busy store through the matcher's visitor shard, with retention.

Every day ``--per-day`` visitors come in (spread over opening hours, event time); a share of
them (``--returning``) are people seen before, drawn uniformly from everyone seen so far, the
rest strangers. Who is who is known (synthetic encodings, :mod:`benchmarks.synthetic`), so no
search is run: a known visitor still held is *sighted* (which re-writes its record when it
moves ``last_seen`` by a day), anyone else is minted. Before each visit the shard retires what
the matcher would (``VisitorShards.retire``, at most ``MAX_RETIRED_PER_DECISION`` per visit, all
in one gallery removal). The shard is the real one:
:class:`~facestream.services.matcher.shards.VisitorShards` and its Faiss gallery (flat).

Printed: per period, the visitors held at its end, the most held, what was minted, retired and
written to ``identities.v1``, against the bound: the unique visitors of the last retention
period (at most traffic x retention); then what retiring cost: the visits that retired someone
(each one gallery removal), the CPU seconds a day spent in ``retire`` (every visit checks) and
per visit that removed, and the seconds the simulation took a day. The summary says whether the
most held stayed within the bound. Last, the store falls silent for longer than the retention:
its next visits owe the whole shard, retired at most ``--max-retired`` a visit.

    python -m benchmarks.pipeline.retention [--days 365] [--per-day 1000] [--returning 0.3]
        [--retention-days 90] [--max-retired 256]

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
from facestream.core.gallery import INDEX_TYPES, GalleryConfig, IndexType
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import IdentityRecord, vector_to_wire
from facestream.services.matcher.decide import MAX_RETIRED_PER_DECISION
from facestream.services.matcher.settings import MatcherSettings
from facestream.services.matcher.shards import VisitorShards

STORE = "busy-store"
START = datetime(2025, 1, 1, tzinfo=UTC)
OPENING = timedelta(hours=9)
OPEN_FOR = 12 * 3600


def _shards(retention: timedelta, index: IndexType) -> VisitorShards:
    pipeline = PipelineSettings()
    return VisitorShards(
        kafka=pipeline,
        topic=f"bench-retention-{uuid.uuid4().hex[:6]}",
        # Built in the call, not on a thread: the year's figures then include the builds.
        config=GalleryConfig(index=index, background_build=False),
        neighbours={},
        on_erased=lambda _key: None,
        client_id="bench-retention",
        retention=retention,
    )


def simulate(
    days: int,
    per_day: int,
    returning: float,
    retention_days: int,
    seed: int,
    cap: int,
    index: IndexType = "flat",
) -> None:
    """Run the year, printing one line per period and a summary; then the store falls silent
    for longer than the retention and its next visits retire the whole shard, ``cap`` a
    visit."""
    rng = np.random.default_rng(seed)
    synth = Synthesizer(seed=seed)
    retention = timedelta(days=retention_days)
    shards = _shards(retention, index)
    centres: list[np.ndarray] = []
    face_of: dict[int, str] = {}  # person -> FaceId held (or last held)
    recent: deque[set[int]] = deque(maxlen=retention_days + 1)  # people seen, per day
    period = max(1, days // 24)
    # Counts, and CPU seconds in ``retire``: all visits ("retiring"), those that removed.
    totals = dict.fromkeys(
        ("minted", "retired", "written", "removals", "retiring", "removing"), 0.0
    )
    window = dict.fromkeys(totals, 0.0)
    most = 0
    started = last = time.perf_counter()
    print(
        f"{per_day} visitors/day, {returning:.0%} returning, retention {retention_days} days, "
        f"bound = traffic x retention = {per_day * retention_days:,}"
    )
    print(
        f"{'day':>5} {'held':>8} {'max':>8} {'unique in window':>17} "
        f"{'minted':>8} {'retired':>8} {'written':>8} {'removals':>9} "
        f"{'retire s/day':>12} {'ms/removal':>10} {'s/day':>6} {'s':>6}"
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
            before = time.process_time()
            retired = shards.retire(STORE, at, cap)
            spent = time.process_time() - before
            window["retiring"] += spent
            if retired:
                window["retired"] += len(retired)
                window["removals"] += 1
                window["removing"] += spent
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
            span = (day % period) + 1  # days in this window (the last may be short)
            now = time.perf_counter()
            print(
                f"{day + 1:>5} {shards.visitors:>8,} {most:>8,} {unique:>17,} "
                f"{window['minted']:>8,.0f} {window['retired']:>8,.0f} "
                f"{window['written']:>8,.0f} {window['removals']:>9,.0f} "
                f"{window['retiring'] / span:>12.2f} "
                f"{_per(window['removing'] * 1e3, window['removals']):>10} "
                f"{(now - last) / span:>6.2f} {now - started:>6.0f}",
                flush=True,
            )
            last = now
            for key in totals:
                totals[key] += window[key]
                window[key] = 0
    silence = _silence(shards, START + timedelta(days=days + retention_days + 1), cap)
    shards.close()
    bound = per_day * retention_days
    print(
        f"year: {totals['minted']:,.0f} minted, {totals['retired']:,.0f} retired, "
        f"{totals['written']:,.0f} records written ({totals['written'] / days:,.0f}/day); "
        f"at most {most:,} visitors held, bound {bound:,} "
        f"({most / bound:.0%}: {'within' if most <= bound else 'OVER'} the bound)"
    )
    print(
        f"retiring: {totals['removals']:,.0f} removals, {totals['retiring']:,.1f} s CPU "
        f"({_per(totals['removing'] * 1e3, totals['removals'])} ms a removal, "
        f"{totals['retiring'] / days:.2f} s a day); "
        f"{time.perf_counter() - started:,.0f} s in all"
    )
    print(silence)


def _silence(shards: VisitorShards, at: datetime, cap: int) -> str:
    """Visits from ``at`` on, one a second, until the whole shard is retired (every visitor is
    due at ``at``); what each visit's retirement cost."""
    held, costs = shards.visitors, []
    while shards.visitors:
        before = time.process_time()
        shards.retire(STORE, at, cap)
        costs.append(time.process_time() - before)
        at += timedelta(seconds=1)
    if not costs:
        return "after a silence: nobody to retire"
    return (
        f"after a silence past the retention: {held:,} visitors retired {cap} a visit over "
        f"{len(costs):,} visits, CPU a visit: median {np.median(costs) * 1e3:.1f} ms, "
        f"mean {np.mean(costs) * 1e3:.1f} ms, most {max(costs) * 1e3:.1f} ms; "
        f"{sum(costs):.1f} s in all"
    )


def _per(total: float, count: float) -> str:
    return f"{total / count:.2f}" if count else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=1000)
    parser.add_argument("--returning", type=float, default=0.3)
    parser.add_argument(
        "--retention-days", type=int, default=MatcherSettings().visitor_retention_days
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-retired",
        type=int,
        default=MAX_RETIRED_PER_DECISION,
        help="visitors retired at most per visit (default: the matcher's)",
    )
    parser.add_argument(
        "--index",
        choices=INDEX_TYPES,
        default="flat",
        help="the shard's index (the matcher's default is auto: compressed past 20,000 samples)",
    )
    args = parser.parse_args()
    simulate(
        args.days,
        args.per_day,
        args.returning,
        args.retention_days,
        args.seed,
        args.max_retired,
        args.index,
    )


if __name__ == "__main__":
    main()
