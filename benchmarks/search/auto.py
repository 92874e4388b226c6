"""``index="auto"`` against exact search, at 1e4..1e6 synthetic dlib-like encodings.

For each size: a gallery filled with ``add_many`` (searchable at once, exactly), the background
build of its compressed index (``wait_for_build``), search time per probe through the service
path (``identify_batch`` of 256 probes, and ``identify`` one probe at a time), recall@1 and
decision agreement against a flat gallery (exact search), and memory per sample: the index and
the columns kept in RAM, and the process's RSS growth (anonymous memory, and the pages of the
mapped vector file that searches touched). Below ``exact_below`` an ``auto`` gallery is flat;
there it is also measured forced compressed, to show the crossover. Run from the project root::

    .venv/bin/python -m benchmarks.search.auto --sizes 1e4,1e5,1e6
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import faiss
import numpy as np

from benchmarks.common import fmt, machine, markdown_table, median, repeat, seconds
from benchmarks.synthetic import Dataset, EncodingModel, Synthesizer
from facestream.core.gallery import Decision, Gallery, GalleryConfig, Identity, faiss_index

log = logging.getLogger("bench_auto")

PER_IDENTITY = 3


def rss() -> dict[str, int]:
    """The process's resident memory in bytes: anonymous (its own) and file-backed (here, the
    mapped vector file's pages in the page cache, which the kernel can drop). Memory freed
    but kept by the allocator is first given back, so that what is counted is what is held."""
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def fill(config: GalleryConfig, ds: Dataset) -> tuple[Gallery, float, float]:
    """A gallery of ``ds`` through ``add_many``; seconds until it answers (exact) and until
    its compressed index is swapped in."""
    people = [
        (Identity(f"p{i}"), ds.vectors[i * PER_IDENTITY : (i + 1) * PER_IDENTITY])
        for i in range(ds.identities)
    ]
    g = Gallery(config)
    started = time.perf_counter()
    g.add_many(people)
    searchable = time.perf_counter() - started
    g.wait_for_build()
    return g, searchable, time.perf_counter() - started


def timings(g: Gallery, ds: Dataset, args: argparse.Namespace) -> dict[str, float]:
    """Milliseconds per probe: batched (``identify_batch``) and one at a time (``identify``)."""
    batch = ds.queries[: args.batch]
    g.identify_batch(batch[:8])  # warm-up
    per_batch = median(repeat(partial(g.identify_batch, batch), 5, args.budget))
    singles: list[float] = []
    for q in ds.queries[: args.singles]:
        singles.append(seconds(partial(g.identify, q)))
        if sum(singles) > args.budget and len(singles) >= 3:
            break
    return {"batch_ms": per_batch / len(batch) * 1e3, "single_ms": median(singles) * 1e3}


def agreement(want: list[Decision], got: list[Decision]) -> dict[str, float]:
    """How often ``got`` (auto) agrees with ``want`` (exact): the nearest identity, the whole
    decision (identity and reason), and the largest distance gap where the identity agrees."""
    pairs = list(zip(want, got, strict=True))
    top1 = [w.candidates[0].identity == g.candidates[0].identity for w, g in pairs]
    same = [(w.identity, w.reason) == (g.identity, g.reason) for w, g in pairs]
    gaps = [
        abs(w.candidates[0].distance - g.candidates[0].distance)
        for w, g in pairs
        if w.candidates[0].identity == g.candidates[0].identity
    ]
    return {
        "recall_at_1": float(np.mean(top1)),
        "decisions_same": float(np.mean(same)),
        "max_distance_gap": max(gaps, default=0.0),
    }


def measure(
    label: str, config: GalleryConfig, ds: Dataset, args: argparse.Namespace
) -> tuple[dict[str, Any], list[Decision]]:
    """Fill, time and size one gallery; returns its row and its decisions on the recall
    probes."""
    n = len(ds.vectors)
    before = rss()
    log.info("N=%d %s: filling", n, label)
    g, searchable, built = fill(config, ds)
    probes = ds.queries[: args.recall_queries]
    decisions = g.identify_batch(probes)
    after = rss()
    row: dict[str, Any] = {
        "label": label,
        "samples": n,
        "kind": (
            f"compressed, IVF {g.partition_lists}"
            if g.partition_lists
            else "compressed"
            if g.compressed
            else "flat"
        ),
        "searchable_s": searchable,
        "built_s": built,
        "index_b": g.index_bytes() / n,
        "ram_b": g.resident_bytes() / n,
        "anon_b": (after["RssAnon"] - before["RssAnon"]) / n,
        "file_b": (after["RssFile"] - before["RssFile"]) / n,
    }
    log.info("N=%d %s: timing", n, label)
    row.update(timings(g, ds, args))
    del g
    gc.collect()
    return row, decisions


def run_size(n: int, synth: Synthesizer, args: argparse.Namespace) -> list[dict[str, Any]]:
    ds = synth.dataset(n, PER_IDENTITY, max(args.recall_queries, args.batch, args.singles))
    # The auto galleries first, so that their RSS growth is not hidden by memory the flat one
    # freed; exact decisions afterwards.
    measured = [
        measure("auto", GalleryConfig(index="auto", exact_below=args.exact_below), ds, args)
    ]
    if n < args.exact_below:
        forced = GalleryConfig(index="auto", exact_below=n)
        measured.append(measure("auto (forced compressed)", forced, ds, args))
    if faiss_index.IVF_FROM and n >= faiss_index.IVF_FROM:
        # The same gallery with every code scanned (the shipped setting): what the partition
        # saves and costs.
        partition_from, faiss_index.IVF_FROM = faiss_index.IVF_FROM, 0
        try:
            config = GalleryConfig(index="auto", exact_below=args.exact_below)
            measured.append(measure("auto (every code scanned)", config, ds, args))
        finally:
            faiss_index.IVF_FROM = partition_from
    measured.insert(0, measure("flat (exact)", GalleryConfig(index="flat"), ds, args))
    exact = measured[0][1]
    for row, decisions in measured:
        row.update(agreement(exact, decisions))
    return [row for row, _ in measured]


HEADERS = [
    "gallery", "N", "index", "searchable s", "built s", "batch ms/probe", "single ms/probe",
    "recall@1", "decisions same", "max dist gap", "index B/sample", "RAM B/sample",
    "RssAnon B/sample", "RssFile B/sample",
]  # fmt: skip


def _row(r: dict[str, Any]) -> list[str]:
    return [
        r["label"],
        f"{r['samples']:,}",
        r["kind"],
        fmt(r["searchable_s"]),
        fmt(r["built_s"]),
        fmt(r["batch_ms"], 3),
        fmt(r["single_ms"], 3),
        f"{r['recall_at_1']:.4f}",
        f"{r['decisions_same']:.4f}",
        f"{r['max_distance_gap']:.1e}",
        fmt(r["index_b"], 1),
        fmt(r["ram_b"], 1),
        fmt(r["anon_b"], 1),
        fmt(r["file_b"], 1),
    ]


def report(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"machine: {json.dumps(result['machine'])}",
            f"faiss threads: {result['faiss_threads']}, probes: {result['args']['recall_queries']}",
            "",
            markdown_table(HEADERS, map(_row, result["rows"])),
            "",
            "searchable: add_many of every sample returned (exact search from then on); built: "
            "the compressed index swapped in (wait_for_build). batch: identify_batch of "
            f"{result['args']['batch']} probes; single: identify, one probe. recall@1: the "
            "nearest identity is exact search's; decisions same: identity and reason; max dist "
            "gap: largest distance difference where the nearest identity agrees. index: "
            "serialised index; RAM: index + the store's columns (and, flat, the raw vectors); "
            "RssAnon / RssFile: growth of the process's anonymous / file-backed resident memory "
            "from before the gallery to after the recall probes (RssAnon includes the identity "
            "maps; RssFile is the mapped vector file's pages that searches touched).",
        ]
    )


def parse_sizes(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("1e4,1e5,1e6"))
    p.add_argument("--recall-queries", type=int, default=1000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--singles", type=int, default=200, help="probes timed one at a time")
    p.add_argument("--budget", type=float, default=10.0, help="seconds per timing loop")
    p.add_argument("--exact-below", type=int, default=GalleryConfig().exact_below)
    p.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads (the workers')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--partition-from",
        type=int,
        default=0,
        help="put the codes behind an IVF partition from this many samples (off when shipped: "
        "faiss_index.IVF_FROM); sizes from it are also measured with every code scanned",
    )
    p.add_argument("--json", type=str, help="also write the results here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    faiss.omp_set_num_threads(args.threads)
    faiss_index.IVF_FROM = args.partition_from
    synth = Synthesizer(EncodingModel(), seed=args.seed)
    result: dict[str, Any] = {
        "machine": machine(["faiss-cpu", "numpy"]),
        "faiss_threads": faiss.omp_get_max_threads(),
        "args": vars(args),
        "rows": [],
    }
    for n in args.sizes:
        result["rows"] += run_size(n, synth, args)
        print(markdown_table(HEADERS, map(_row, result["rows"][-3:])), file=sys.stderr)
    print(report(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
