"""The Faiss knobs that change search speed on a small machine, measured on a built gallery.

- OpenMP threads. Faiss parallelises one search over ``omp_get_max_threads()`` threads (here
  the 2 cores). With several callers at once (worker processes, or server threads) each call
  wants every core; ``faiss.omp_set_num_threads(1)`` keeps one call on one core. The setting
  is per calling thread: a Python thread does not inherit it from the main thread, so it is set
  in each caller here (``OMP_NUM_THREADS=1`` in the environment sets it for every thread).
- ``faiss.cvar.distance_compute_blas_threshold``. Exact search computes distances either query
  by query with SIMD code or as one BLAS matrix product. In faiss 1.15 BLAS is used when
  ``n_queries * dim >= threshold``; the default 128000 means from 1000 queries of 128-d.
- ``nprobe`` (IVF) and ``ef_search`` (HNSW): how much of the index one search visits, the
  trade between recall and time. Set through ``Gallery.load(path, nprobe=..., ef_search=...)``.

libgomp's threads spin while they wait for work; when other processes keep the cores busy a
parallel region can wait for a whole scheduler slice. ``OMP_WAIT_POLICY=PASSIVE`` in the
environment (read when the library loads, so it cannot be changed in-process) makes them sleep;
run the levers twice, with and without it, to see the difference.
"""

from __future__ import annotations

import argparse
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from benchmarks.common import fmt, markdown_table, median, p95, repeat, seconds
from facestream.core.gallery import Gallery

BATCHES = (1, 8, 32, 256, 1024)
NPROBES = (8, 16, 32, 64, 128, 256)
EF_SEARCHES = (16, 32, 64, 128, 256, 512)
NEVER = 2**31 - 1


def _concurrent_qps(
    g: Gallery, queries: NDArray[np.float32], callers: int, omp: int, span: float
) -> float:
    """Single-probe searches from ``callers`` threads at once for ``span`` seconds: total q/s."""
    counts = [0] * callers
    start = threading.Barrier(callers + 1)
    stop_at: list[float] = []

    def caller(slot: int) -> None:
        faiss.omp_set_num_threads(omp)  # per thread: not inherited from the main thread
        start.wait()
        i = slot
        while time.perf_counter() < stop_at[0]:
            g.search(queries[i % len(queries)][None, :], 1)
            counts[slot] += 1
            i += callers

    threads = [threading.Thread(target=caller, args=(s,)) for s in range(callers)]
    for t in threads:
        t.start()
    begun = time.perf_counter()
    stop_at.append(begun + span)
    start.wait()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - begun)


def _singles(g: Gallery, queries: NDArray[np.float32], count: int, budget: float) -> list[float]:
    times: list[float] = []
    for q in queries[:count]:
        times.append(seconds(partial(g.search, q[None, :], 1)))
        if sum(times) > budget and len(times) >= 3:
            break
    return times


def threads(
    g: Gallery, queries: NDArray[np.float32], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Single-probe latency, batch throughput and 2 concurrent callers with 1 vs 2 threads."""
    rows = []
    before = faiss.omp_get_max_threads()
    batch = queries[: args.batch]
    try:
        for omp in (1, 2):
            faiss.omp_set_num_threads(omp)
            g.search(queries[:8], 1)
            times = _singles(g, queries, args.queries, args.lever_budget)
            batch_times = repeat(partial(g.search, batch, 1), 5, args.lever_budget)
            rows.append(
                {
                    "index": g.config.index,
                    "samples": g.sample_count,
                    "omp_threads": omp,
                    "p50_ms": median(times) * 1e3,
                    "p95_ms": p95(times) * 1e3,
                    "batch_qps": len(batch) / median(batch_times),
                    "two_callers_qps": _concurrent_qps(g, queries, 2, omp, args.lever_budget),
                }
            )
    finally:
        faiss.omp_set_num_threads(before)
    return rows


def blas_threshold(
    g: Gallery, queries: NDArray[np.float32], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Exact (flat) search time per batch, with BLAS always, by default and never, on 1 and 2
    threads."""
    rows = []
    default = int(faiss.cvar.distance_compute_blas_threshold)
    before = faiss.omp_get_max_threads()
    settings = {"always": 20, "default": default, "never": NEVER}
    try:
        for omp in (1, 2):
            faiss.omp_set_num_threads(omp)
            for size in (b for b in BATCHES if b <= len(queries)):
                batch = queries[:size]
                row: dict[str, Any] = {"samples": g.sample_count, "batch": size, "omp_threads": omp}
                for label, value in settings.items():
                    faiss.cvar.distance_compute_blas_threshold = value
                    g.search(batch[:1], 1)
                    times = repeat(partial(g.search, batch, 1), 5, args.lever_budget)
                    row[f"{label}_ms"] = median(times) * 1e3
                rows.append(row)
    finally:
        faiss.cvar.distance_compute_blas_threshold = default
        faiss.omp_set_num_threads(before)
    return rows


def search_params(
    g: Gallery,
    queries: NDArray[np.float32],
    truth: NDArray[np.int64],
    owners: NDArray[np.int64],
    args: argparse.Namespace,
    workdir: Path,
) -> list[dict[str, Any]]:
    """Recall@1 and time against ``nprobe`` (IVF) or ``ef_search`` (HNSW)."""
    if g.config.index == "flat":
        return []
    name, values = ("ef_search", EF_SEARCHES) if g.config.index == "hnsw" else ("nprobe", NPROBES)
    path = workdir / f"{g.config.index}-params.npz"
    g.save(path)
    rows = []
    probes = queries[: len(truth)]
    try:
        for value in values:
            tuned = Gallery.load(path, **{name: value})
            top1 = tuned.search(probes, 1)[1][:, 0]
            times = _singles(tuned, queries, args.queries, args.lever_budget)
            batch_times = repeat(
                partial(tuned.search, queries[: args.batch], 1), 5, args.lever_budget
            )
            rows.append(
                {
                    "index": g.config.index,
                    "samples": g.sample_count,
                    "param": name,
                    "value": value,
                    "recall_at_1": float((top1 == truth).mean()),
                    "true_at_1": float((top1 == owners[: len(top1)]).mean()),
                    "p50_ms": median(times) * 1e3,
                    "batch_qps": args.batch / median(batch_times),
                }
            )
            del tuned
    finally:
        path.unlink(missing_ok=True)
    return rows


def report(levers: dict[str, list[dict[str, Any]]]) -> list[str]:
    out: list[str] = []
    if levers["threads"]:
        out += ["", "## Lever: OpenMP threads per search", ""]
        out.append(
            markdown_table(
                ["index", "N", "threads", "p50 ms", "p95 ms", "batch q/s", "2 callers q/s"],
                [
                    [
                        r["index"],
                        f"{r['samples']:,}",
                        r["omp_threads"],
                        fmt(r["p50_ms"], 3),
                        fmt(r["p95_ms"], 3),
                        fmt(r["batch_qps"], 1),
                        fmt(r["two_callers_qps"], 1),
                    ]
                    for r in levers["threads"]
                ],
            )
        )
        out.append(
            "\n2 callers: two Python threads issuing single-probe searches at once (each with "
            "that many OpenMP threads); total q/s."
        )
    if levers["blas"]:
        out += ["", "## Lever: distance_compute_blas_threshold (flat, exact search)", ""]
        out.append(
            markdown_table(
                ["N", "batch", "threads", "BLAS always ms", "default ms", "never ms"],
                [
                    [
                        f"{r['samples']:,}",
                        r["batch"],
                        r["omp_threads"],
                        fmt(r["always_ms"], 3),
                        fmt(r["default_ms"], 3),
                        fmt(r["never_ms"], 3),
                    ]
                    for r in levers["blas"]
                ],
            )
        )
        out.append(
            "\nms per batch (median). always: threshold 20; never: 2**31-1; default: BLAS from "
            "1000 probes (faiss 1.15 compares n_probes*128 with the threshold)."
        )
    if levers["params"]:
        out += ["", "## Lever: nprobe (IVF) and ef_search (HNSW)", ""]
        out.append(
            markdown_table(
                ["index", "N", "param", "value", "recall@1", "true@1", "p50 ms", "batch q/s"],
                [
                    [
                        r["index"],
                        f"{r['samples']:,}",
                        r["param"],
                        r["value"],
                        f"{r['recall_at_1']:.3f}",
                        f"{r['true_at_1']:.3f}",
                        fmt(r["p50_ms"], 3),
                        fmt(r["batch_qps"], 1),
                    ]
                    for r in levers["params"]
                ],
            )
        )
    return out
