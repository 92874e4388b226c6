"""1:N search over galleries of 1e3..1e6 synthetic dlib-like encodings.

Compares what naive face services do (a Python loop of 1:1 comparisons;
``face_recognition.face_distance`` over every sample) with the :class:`Gallery` on each Faiss
index type, and measures the Faiss levers that matter on a small machine (OpenMP threads, the
BLAS threshold, nprobe and ef_search; see ``benchmarks.search.levers``). Run from the project
root::

    .venv/bin/python -m benchmarks.search --sizes 1e3,1e4,1e5,1e6 --json out.json

Galleries are built through ``Gallery.load`` of a file in the ``Gallery.save`` format (the bulk
path: one index build over all samples); the public ``Gallery.add`` takes one identity at a time
and copies every stored sample on each call, so it is measured separately: the cost of one add
at each size, a build from empty under a time budget, and the build time projected from the
former.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import face_recognition
import faiss
import numpy as np
from numpy.typing import NDArray

from benchmarks.common import fmt, machine, markdown_table, median, p95, repeat
from benchmarks.search import levers as search_levers
from benchmarks.search.gallery_build import add_loop, load_gallery, marginal_add, projected_build
from benchmarks.synthetic import Dataset, EncodingModel, Synthesizer, describe
from facestream.core.gallery import Gallery, GalleryConfig

log = logging.getLogger("bench_search")

PER_IDENTITY = 3
RAW_BYTES = 128 * 4
NAIVE = ("loop", "face_distance")
INDEXES = ("flat", "ivf", "ivfsq8", "hnsw")


# -- methods ---------------------------------------------------------------------------------

Single = Callable[[NDArray[np.float32]], int]


def naive_loop(ds: Dataset) -> Single:
    """What a naive service does: compare the probe with every stored encoding in Python."""
    rows = list(ds.vectors)
    owners = ds.owners

    def nearest(q: NDArray[np.float32]) -> int:
        best, best_i = math.inf, -1
        for i, s in enumerate(rows):
            d = float(np.linalg.norm(s - q))
            if d < best:
                best, best_i = d, i
        return int(owners[best_i])

    return nearest


def face_distance(ds: Dataset) -> Single:
    """``face_recognition.face_distance``: one vectorised numpy pass over every sample."""

    def nearest(q: NDArray[np.float32]) -> int:
        return int(ds.owners[int(np.argmin(face_recognition.face_distance(ds.vectors, q)))])

    return nearest


def time_singles(
    fn: Single, queries: NDArray[np.float32], budget: float
) -> tuple[list[float], list[int]]:
    """Per-query wall times and answers, one query at a time, at least 3 queries, stopping
    when ``budget`` seconds are spent."""
    times: list[float] = []
    answers: list[int] = []
    for q in queries:
        started = time.perf_counter()
        answers.append(fn(q))
        times.append(time.perf_counter() - started)
        if sum(times) > budget and len(times) >= 3:
            break
    return times, answers


def measure_naive(
    name: str, ds: Dataset, truth: NDArray[np.int64], args: argparse.Namespace
) -> dict[str, Any]:
    fn = naive_loop(ds) if name == "loop" else face_distance(ds)
    times, answers = time_singles(fn, ds.queries[: args.queries], args.budget)
    got = np.array(answers)
    n = len(got)
    return {
        "method": name,
        "samples": len(ds.vectors),
        "build_s": None,
        "bytes_per_sample": RAW_BYTES,
        "p50_ms": median(times) * 1e3,
        "p95_ms": p95(times) * 1e3,
        "timed_queries": n,
        # No batch form: a batch costs the sum of its queries.
        "batch_qps": n / sum(times),
        "batch_is_sequential": True,
        "identify_p50_ms": None,
        "recall_at_1": float((got == truth[:n]).mean()),
        "recall_queries": n,
        "true_at_1": float((got == ds.query_owners[:n]).mean()),
    }


def measure_gallery(
    g: Gallery,
    build_s: float,
    ds: Dataset,
    truth: NDArray[np.int64] | None,
    args: argparse.Namespace,
) -> tuple[dict[str, Any], NDArray[np.int64]]:
    n = len(ds.vectors)
    probes = ds.queries[: args.recall_queries]
    top1 = g.search(probes, 1)[1][:, 0]  # one batched call, untimed
    truth = top1 if truth is None else truth

    def single(q: NDArray[np.float32]) -> int:
        return int(g.search(q[None, :], 1)[1][0, 0])

    g.search(ds.queries[:8], 1)  # warm-up
    times, _ = time_singles(single, ds.queries[: args.queries], args.budget)
    batch = ds.queries[: args.batch]
    batch_times = repeat(lambda: g.search(batch, 1), 5, args.budget)
    ident_times, _ = time_singles(
        lambda q: int(g.identify(q).matched), ds.queries[: min(50, args.queries)], args.budget / 2
    )
    return {
        "method": g.config.index,
        "samples": n,
        "build_s": build_s,
        "bytes_per_sample": g.index_bytes() / n,
        "p50_ms": median(times) * 1e3,
        "p95_ms": p95(times) * 1e3,
        "timed_queries": len(times),
        "batch_qps": len(batch) / median(batch_times),
        "batch_is_sequential": False,
        "identify_p50_ms": median(ident_times) * 1e3,
        "recall_at_1": float((top1 == truth).mean()),
        "recall_queries": len(top1),
        "true_at_1": float((top1 == ds.query_owners[: len(top1)]).mean()),
    }, truth


# -- the run ---------------------------------------------------------------------------------


@dataclass
class AddState:
    """What measuring ``Gallery.add`` at one size leaves for the next sizes."""

    marginals: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    gave_up: set[str] = field(default_factory=set)


def run_size(
    n: int, synth: Synthesizer, args: argparse.Namespace, state: AddState
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Every measurement at one gallery size. ``state`` carries what later sizes need: the
    per-add costs measured so far and which add loops ran out of budget."""
    probes = max(args.queries, args.recall_queries, args.batch)
    if n in args.lever_sizes:
        probes = max(probes, *search_levers.BATCHES)
    ds = synth.dataset(n, PER_IDENTITY, probes)
    rows: list[dict[str, Any]] = []
    adds: list[dict[str, Any]] = []
    levers: dict[str, list[dict[str, Any]]] = {"threads": [], "blas": [], "params": []}
    truth: NDArray[np.int64] | None = None
    indexes = ["flat", *[m for m in args.methods if m in INDEXES and m != "flat"]]
    with tempfile.TemporaryDirectory(prefix="bench_search.") as tmp:
        for index in indexes:
            cfg = GalleryConfig(index=index)
            log.info("N=%d %s: building", n, index)
            g, build_s = load_gallery(cfg, ds, Path(tmp))
            log.info("N=%d %s: built in %.1fs, measuring", n, index, build_s)
            if args.levers_only:
                recall_probes = ds.queries[: args.recall_queries]
                truth = g.search(recall_probes, 1)[1][:, 0] if truth is None else truth
            else:
                row, truth = measure_gallery(g, build_s, ds, truth, args)
                if index in args.methods:
                    rows.append(row)
            if n in args.lever_sizes:
                log.info("N=%d %s: levers", n, index)
                levers["threads"] += search_levers.threads(g, ds.queries, args)
                if index == "flat":
                    levers["blas"] += search_levers.blas_threshold(g, ds.queries, args)
            if n in args.params_sizes:
                log.info("N=%d %s: nprobe / ef_search", n, index)
                levers["params"] += search_levers.search_params(
                    g, ds.queries, truth, ds.query_owners, args, Path(tmp)
                )
            if index in args.methods and args.add_budget > 0 and not args.levers_only:
                adds.append(measure_adds(g, cfg, ds, synth, args, state))
            del g
            gc.collect()
    assert truth is not None
    for name in NAIVE:
        if name in args.methods and not args.levers_only:
            log.info("N=%d %s: measuring", n, name)
            rows.insert(NAIVE.index(name), measure_naive(name, ds, truth, args))
    return rows, adds, levers


def measure_adds(
    g: Gallery,
    cfg: GalleryConfig,
    ds: Dataset,
    synth: Synthesizer,
    args: argparse.Namespace,
    state: AddState,
) -> dict[str, Any]:
    """The cost of ``Gallery.add`` at this size (changes ``g``), and a whole build through it
    while the previous size's build fitted in the budget."""
    n = len(ds.vectors)
    log.info("N=%d %s: Gallery.add cost", n, cfg.index)
    marginals = state.marginals.setdefault(cfg.index, [])
    marginals.append((n, marginal_add(g, synth, PER_IDENTITY, 100, args.add_budget / 4)))
    res: dict[str, Any] = {"index": cfg.index, "samples": n, "add_ms": marginals[-1][1] * 1e3}
    res["projected_s"] = projected_build(marginals, n, PER_IDENTITY)
    if cfg.index not in state.gave_up:
        log.info("N=%d %s: Gallery.add loop (budget %.0fs)", n, cfg.index, args.add_budget)
        res.update(add_loop(cfg, ds, PER_IDENTITY, args.add_budget))
        if not res["completed"]:
            state.gave_up.add(cfg.index)
    return res


MAIN_HEADERS = [
    "method", "N", "build s", "bytes/sample", "p50 ms", "p95 ms", "timed q", "batch q/s",
    "identify p50 ms", "recall@1 (probes)", "true@1",
]  # fmt: skip


def _main_row(r: dict[str, Any]) -> list[str]:
    return [
        r["method"],
        f"{r['samples']:,}",
        fmt(r["build_s"]),
        fmt(r["bytes_per_sample"], 1),
        fmt(r["p50_ms"], 3),
        fmt(r["p95_ms"], 3),
        str(r["timed_queries"]),
        fmt(r["batch_qps"], 1) + ("*" if r["batch_is_sequential"] else ""),
        fmt(r["identify_p50_ms"], 3),
        f"{r['recall_at_1']:.3f} ({r['recall_queries']})",
        f"{r['true_at_1']:.3f}",
    ]


def _add_row(a: dict[str, Any]) -> list[str]:
    if "added" not in a:
        loop = "not run"
    elif a["completed"]:
        loop = f"{fmt(a['seconds'])} s"
    else:
        loop = f"stopped: {a['added']:,} samples in {fmt(a['seconds'])} s"
    return [a["index"], f"{a['samples']:,}", fmt(a["add_ms"], 3), fmt(a["projected_s"]), loop]


def report(result: dict[str, Any]) -> str:
    synthetic = {k: round(v, 3) for k, v in result["synthetic"].items()}
    out = [
        f"machine: {json.dumps(result['machine'])}",
        f"faiss threads: {result['faiss_threads']}, "
        f"blas threshold: {result['blas_threshold_default']}",
        f"synthetic encodings: {json.dumps(synthetic)}",
    ]
    if result["rows"]:
        out += [
            "",
            "## 1:N search",
            "",
            markdown_table(MAIN_HEADERS, map(_main_row, result["rows"])),
        ]
        out.append(
            f"\nbatch: {result['args']['batch']} probes in one call; `*` no batch form, probes "
            "one after another. build s: `Gallery.load` of a saved gallery (one index build). "
            "recall@1: identity-level top-1 agreement with exact search (flat). true@1: the "
            "top-1 identity is the probe's own."
        )
    if result["adds"]:
        out += ["", "## Building through Gallery.add (one identity of 3 samples per call)", ""]
        headers = ["index", "N", "ms per add at N", "projected build s", "measured build"]
        out.append(markdown_table(headers, map(_add_row, result["adds"])))
        out.append(
            "\nms per add at N: one more identity into a gallery of N samples (median). "
            "projected: the sum of that cost over a build from empty, interpolated between the "
            "sizes measured. measured: an add loop from empty, stopped at the budget (larger "
            "sizes are not tried once one stops)."
        )
    out += search_levers.report(result["levers"])
    return "\n".join(out)


def parse_sizes(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("1e3,1e4,1e5,1e6"))
    p.add_argument("--queries", type=int, default=200, help="probes timed one at a time (at most)")
    p.add_argument("--recall-queries", type=int, default=1000, help="probes for recall@1")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument(
        "--budget", type=float, default=10.0, help="seconds per timing loop (at least 3 queries)"
    )
    p.add_argument("--methods", type=lambda s: s.split(","), default=[*NAIVE, *INDEXES])
    p.add_argument(
        "--add-budget", type=float, default=20.0, help="seconds for a Gallery.add loop; 0 skips"
    )
    p.add_argument(
        "--lever-sizes", type=parse_sizes, default=parse_sizes("1e5"), help="threads and BLAS"
    )
    p.add_argument(
        "--params-sizes",
        type=parse_sizes,
        default=parse_sizes("1e5,1e6"),
        help="sizes for the nprobe / ef_search sweep",
    )
    p.add_argument(
        "--lever-budget", type=float, default=3.0, help="seconds per timing loop of the levers"
    )
    p.add_argument("--levers-only", action="store_true", help="only the lever tables")
    p.add_argument("--threads", type=int, default=0, help="faiss OpenMP threads (0: faiss default)")
    p.add_argument(
        "--isotropic", action="store_true", help="isotropic synthetic encodings (harder)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    synth = Synthesizer(EncodingModel(isotropic=args.isotropic), seed=args.seed)
    result: dict[str, Any] = {
        "machine": machine(["faiss-cpu", "numpy", "face-recognition", "dlib-bin"]),
        "faiss_threads": faiss.omp_get_max_threads(),
        "blas_threshold_default": int(faiss.cvar.distance_compute_blas_threshold),
        "synthetic": describe(synth),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": [],
        "adds": [],
        "levers": {"threads": [], "blas": [], "params": []},
    }
    state = AddState()
    for n in args.sizes:
        rows, adds, levers = run_size(n, synth, args, state)
        result["rows"] += rows
        result["adds"] += adds
        for key, value in levers.items():
            result["levers"][key] += value
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
