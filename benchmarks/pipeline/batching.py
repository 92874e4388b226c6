"""Batched matching (issue 7, item 1): the matcher handed each poll batch first (``prepare``:
one search per gallery for all of its faces) against face by face, on the same handler and the
same member gallery, in alternating rounds of the same mix of probes; and the same batches
with the member scales ready (``FACESTREAM_MATCHER_MEMBER_SCALES=background``).

    python -m benchmarks.pipeline.batching --sizes 10000 100000 1000000 --batch 100

One core (``OMP_NUM_THREADS=1``, as the workers run), the real broker and Redis of
``facestream stack up`` (the handler reads its changelogs there), the matcher's default index
(``auto``) and policy (normalised). Member samples are the synthetic encodings of
``python -m benchmarks.pipeline`` (section 2): 3 per member, a model fitted on 200 real LFW
encodings. A round is ``--per-kind`` member, returning and new probes, shuffled. Prints, per
gallery size, the observations per second of each mode (median over rounds), the per-kind
medians, the decisions, and the ratio; compare the ratio, measured within one run, rather than
the absolute rates of this shared machine.

Member scales (facestream.core.scales): before a round of the first two modes the member
table is emptied, so each member probe computes its member's scale, as at its first sighting
since the matcher started; before a round of the third, the scales of that round's members are
computed (untimed), as the background thread would have: what a member decision costs once the
thread is done. The thread's own rate is measured apart (``fill``: ``--fill`` members, timed),
and the whole table's time at each size is that rate's estimate. Visitor scales are kept in
every mode, as the matcher keeps them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.pipeline import matcher as mat
from benchmarks.pipeline import workers
from benchmarks.pipeline.runs import Runs
from benchmarks.pipeline.synthetic import EncodingModel, lfw_encodings
from facestream.core.gallery import Gallery, GalleryConfig
from facestream.core.scales import ScaleTable

MODES = {"face by face": (0, False)}
"""Mode label -> (the batch handed to prepare, 0: none; member scales ready); the batched modes
are added from --batch."""


def measure(
    sizes: list[int], batch: int, rounds: int, per_kind: int, fill: int = 2000, seed: int = 7
) -> list[dict[str, Any]]:
    """Rows of (size, mode): the summary of :func:`benchmarks.pipeline.matcher.summary`."""
    runs = Runs(plan={}, quick=False)  # for its engine and the stack's settings
    rng = np.random.default_rng(seed)
    model = EncodingModel.fit(lfw_encodings(runs.engine, 200))
    modes = {
        **MODES,
        f"batches of {batch}": (batch, False),
        f"batches of {batch}, member scales ready": (batch, True),
    }
    rows: list[dict[str, Any]] = []
    with (
        workers.fresh_pipeline(runs.base, "batching") as settings,
        tempfile.TemporaryDirectory(prefix="facestream-bench-") as tmp,
    ):
        bench = mat.MatcherBench(settings, workers.PARTITIONS, settings.group_prefix)
        try:
            for size in sizes:
                vectors, owners, centres = model.gallery(size, mat.PER_PERSON, rng)
                built = mat.build_gallery(
                    GalleryConfig(index="auto"), vectors, owners, Path(tmp), rng
                )
                del vectors
                built.gallery.wait_for_build()
                # An untimed round seeds the store's shard with strangers to come back.
                seed_probes = bench.probes(model, centres, per_kind, rng)
                bench.run(built.gallery, seed_probes, mat.RoundResult())
                judge = bench.handler.members.judge
                assert judge is not None  # the normalised policy, the matcher's default
                fill_rate = _fill_rate(judge.scales, fill)
                results: dict[str, list[mat.RoundResult]] = {m: [] for m in modes}
                for r in range(rounds):
                    order = list(modes.items()) if r % 2 == 0 else list(modes.items())[::-1]
                    for label, (size_of_batch, ready) in order:
                        result = mat.RoundResult()
                        probes = bench.probes(model, centres, per_kind, rng)
                        judge.scales.clear()
                        if ready:
                            probed = [p.person for p in probes if p.expected == "member"]
                            judge.scales.fill(ids=probed)
                        bench.run(built.gallery, probes, result, batch=size_of_batch)
                        results[label].append(result)
                for label, done in results.items():
                    row = mat.summary(done)
                    rows.append(
                        {
                            "samples": size,
                            "mode": label,
                            "index": "compressed" if built.gallery.compressed else "exact",
                            "fill_per_s": fill_rate,
                            "members": len(built.gallery),
                            **row,
                        }
                    )
                bench.handler.members.gallery = Gallery(GalleryConfig())
                del built
                gc.collect()
        finally:
            bench.close()
    return rows


def _fill_rate(table: ScaleTable, count: int) -> float:
    """Member scales computed per second by :meth:`ScaleTable.fill` (the background thread's
    work), over ``count`` members; the table is emptied again after."""
    ids = [i.id for i in table.galleries[0].identities()[:count]]
    table.clear()
    started = time.perf_counter()
    table.fill(ids=ids)
    rate = len(ids) / (time.perf_counter() - started)
    table.clear()
    return rate


def report(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, with each batched mode's rate over face by face's."""
    base = {r["samples"]: r["obs_per_s"] for r in rows if r["mode"] == "face by face"}
    lines = [
        "| member samples | index | mode | obs/s (mix) | vs face by face | member µs | "
        "returning µs | new µs | decisions (expected: got) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    fills = []
    for r in rows:
        decided = "; ".join(
            f"{expected}: " + ", ".join(f"{k} {n}" for k, n in sorted(got.items()))
            for expected, got in sorted(r["decided"].items())
        )
        lines.append(
            f"| {r['samples']:,} | {r['index']} | {r['mode']} | {r['obs_per_s']:,.0f} | "
            f"{r['obs_per_s'] / base[r['samples']]:.2f}x | {r['us']['member']:,.0f} | "
            f"{r['us']['returning']:,.0f} | {r['us']['new']:,.0f} | {decided} |"
        )
        if r["mode"] == "face by face":
            fills.append(
                f"- {r['samples']:,} samples: the member scales computed at "
                f"{r['fill_per_s']:,.0f} members/s by the background thread's code; all "
                f"{r['members']:,} members in about {r['members'] / r['fill_per_s']:,.0f} s"
            )
    return "\n".join([*lines, "", *fills])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--batch", type=int, default=100, help="faces per poll batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-kind", type=int, default=100)
    parser.add_argument("--fill", type=int, default=2000, help="members timed for the fill rate")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mat._threads(1)
    rows = measure(args.sizes, args.batch, args.rounds, args.per_kind, args.fill)
    print(report(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
