"""Can an index skip most of a gallery at recall 0.997 on face-like encodings?

    .venv/bin/python -m benchmarks.search.partitions [--samples 100000] [--queries 2000]
        [--isotropic]

Issue 7 asks 1,500 observations/s on one core at 1e6 member samples with recall@1 against exact
search of at least 0.997. The matcher's compressed index scans every code (1.5-2.5 ms a probe at
1e6, docs/benchmarks.md); 1,500/s leaves about 0.3 ms for the search, so an index would have to
look at a fifth of the gallery or less. This measures, on the synthetic encodings of
:mod:`benchmarks.synthetic` (the spread of real dlib encodings, half their variance in about a
dozen directions), how much of the gallery three kinds of index must visit for that recall:

* IVF (``IndexIVFFlat``, raw vectors in each list, so recall is the partition's alone): the
  probe's ``nprobe`` nearest lists of ``nlist``;
* IVF with each vector stored in its 2 nearest lists ("spilled", as ScaNN's SOAR does with a
  smarter second choice), the usual fix for neighbours cut off by a list's border: scanned
  share is ``2 * nprobe / nlist``;
* HNSW (``IndexHNSWFlat``, M 16): a graph walk of ``efSearch`` candidates;
* the matcher's own codes (4-bit PQ, 256 candidates re-ranked), scanned whole as the matcher
  does, and behind an IVF partition of the same lists: what a partition would save it.

Every probe is a new photo of a person in the gallery (3 photos each), the 8 candidates each
raw index returns (256 for the codes) are re-ranked exactly, and recall@1 is the share of
probes whose nearest *identity* is exact search's. Search (not the re-ranking) is timed on one
thread, a batch of all probes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from benchmarks.common import markdown_table
from benchmarks.synthetic import DIM, EncodingModel, Synthesizer

CANDIDATES = 8
COMPRESSED = "PQ64x4fs"
"""The matcher's compressed codes (facestream/core/gallery/faiss_index.py)."""
RERANKED = 256
"""Candidates the matcher re-ranks from its compressed index (``GalleryConfig.rerank``)."""


def spilled_ivf(vectors: NDArray[np.float32], nlist: int, copies: int) -> tuple[Any, Any]:
    """An IVF-Flat index whose every vector sits in its ``copies`` nearest lists, and its
    quantizer, which the caller keeps alive as long as the index (Faiss does not own it)."""
    quantizer = faiss.IndexFlatL2(DIM)
    index = faiss.IndexIVFFlat(quantizer, DIM, nlist)
    index.train(vectors[: max(65_536, 64 * nlist)])
    _, lists = quantizer.search(vectors, copies)
    invlists: Any = index.invlists
    for copy in range(copies):
        for lst in range(nlist):
            ids = np.flatnonzero(lists[:, copy] == lst).astype(np.int64)
            if ids.size:
                codes = np.ascontiguousarray(vectors[ids]).view(np.uint8)
                invlists.add_entries(lst, ids.size, faiss.swig_ptr(ids), faiss.swig_ptr(codes))
    index.ntotal = len(vectors) * copies
    return index, quantizer


def measure(
    index: Any,
    queries: NDArray[np.float32],
    vectors: NDArray[np.float32],
    owners: NDArray[np.int64],
    truth: NDArray[np.int64],
    candidates: int = CANDIDATES,
) -> tuple[float, float]:
    """(recall@1 of the nearest identity after exact re-ranking, ms a probe on one thread)."""
    faiss.omp_set_num_threads(1)
    started = time.perf_counter()
    _, keys = index.search(queries, candidates)
    ms = (time.perf_counter() - started) * 1e3 / len(queries)
    keys = np.where(keys >= 0, keys, keys[:, :1])
    d2 = np.empty(keys.shape, dtype=np.float32)
    for start in range(0, len(keys), 16):  # a few probes at a time: 256 candidates are big
        block = slice(start, start + 16)
        diff = vectors[keys[block]] - queries[block, None, :]
        d2[block] = np.einsum("qkd,qkd->qk", diff, diff)
    nearest = keys[np.arange(len(keys)), d2.argmin(1)]
    return float((owners[nearest] == truth).mean()), ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=float, default=1e5)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--isotropic", action="store_true")
    args = parser.parse_args()
    n = int(args.samples)
    synth = Synthesizer(EncodingModel(isotropic=args.isotropic), seed=0)
    ds = synth.dataset(n, 3, args.queries)
    faiss.omp_set_num_threads(2)
    exact = faiss.IndexFlatL2(DIM)
    exact.add(ds.vectors)
    _, nearest = exact.search(ds.queries, 1)
    truth = ds.owners[nearest[:, 0]]
    rows: list[list[str]] = []
    nlist = int(4 * np.sqrt(n)) // 64 * 64 or 64
    for copies in (1, 2):
        faiss.omp_set_num_threads(2)
        started = time.perf_counter()
        index, _quantizer = spilled_ivf(ds.vectors, nlist, copies)
        built = time.perf_counter() - started
        name = "IVF" if copies == 1 else "IVF, each vector in 2 lists"
        for nprobe in (nlist // 64, nlist // 32, nlist // 16, nlist // 8, nlist // 4, nlist // 2):
            index.nprobe = max(1, nprobe)
            recall, ms = measure(index, ds.queries, ds.vectors, ds.owners, truth)
            share = copies * index.nprobe / nlist
            rows.append(
                [
                    f"{name} ({nlist} lists)",
                    f"nprobe {index.nprobe}",
                    f"{share:.3f}",
                    f"{recall:.4f}",
                    f"{ms:.3f}",
                    f"{built:.0f}",
                ]
            )
    faiss.omp_set_num_threads(2)
    started = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(DIM, 16)
    hnsw.add(ds.vectors)
    built = time.perf_counter() - started
    for ef in (16, 64, 256, 1024):
        hnsw.hnsw.efSearch = ef
        recall, ms = measure(hnsw, ds.queries, ds.vectors, ds.owners, truth)
        rows.append(
            ["HNSW (M 16)", f"efSearch {ef}", "-", f"{recall:.4f}", f"{ms:.3f}", f"{built:.0f}"]
        )
    sample = ds.vectors[np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False)]
    for spec in (f"IVF{nlist},{COMPRESSED}", COMPRESSED):
        faiss.omp_set_num_threads(2)
        started = time.perf_counter()
        coded = faiss.index_factory(DIM, spec)
        coded.train(sample)
        coded.add(ds.vectors)
        built = time.perf_counter() - started
        shares = (16, 8, 6, 4) if spec.startswith("IVF") else (1,)
        for part in shares:
            if part > 1:
                faiss.extract_index_ivf(coded).nprobe = nlist // part
            recall, ms = measure(coded, ds.queries, ds.vectors, ds.owners, truth, RERANKED)
            name = "IVF over 4-bit PQ codes" if part > 1 else "4-bit PQ codes, all scanned"
            rows.append(
                [
                    f"{name} ({COMPRESSED}, {RERANKED} re-ranked)",
                    f"nprobe {nlist // part}" if part > 1 else "-",
                    f"{1 / part:.3f}",
                    f"{recall:.4f}",
                    f"{ms:.3f}",
                    f"{built:.0f}",
                ]
            )
    faiss.omp_set_num_threads(1)
    started = time.perf_counter()
    exact.search(ds.queries, 1)
    flat_ms = (time.perf_counter() - started) * 1e3 / len(ds.queries)
    rows.append(["exact (flat)", "-", "1.000", "1.0000", f"{flat_ms:.3f}", "0"])
    model = "isotropic" if args.isotropic else "face-like (correlated)"
    print(f"{n:,} samples, {args.queries} probes, {model} synthetic encodings")
    print(
        markdown_table(
            [
                "index",
                "setting",
                "share of the gallery scanned",
                "recall@1 (identity)",
                "ms a probe (1 thread)",
                "build s (2 threads)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
