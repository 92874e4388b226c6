"""Throughput and latency of the pipeline stages, in process and on the real broker.

1. Detector frames per second on one core: ``DetectorHandler.handle`` on in-memory records of
   480p and 720p frames with one face, and of the same frames with the face blurred out.
2. Matcher observations per second: ``MatcherHandler.handle`` with a member gallery of 1e4 and
   1e6 synthetic samples (flat and IVF), what one ``Gallery.add`` (a mint) costs at each size,
   and how long a shard and a member tier take to rebuild from their changelogs.
3. End-to-end latency: one detector, matcher and sink process; frames published at a steady
   rate; latency = when the match event is read minus the frame's ``captured_at``.
4. Detector scaling: a backlog of frames over every partition, drained by one and by two
   detector processes: of many stores (``scaling``, one store per partition), and of one
   store's cameras (``store-scaling``, one camera per partition: frames are keyed
   ``store/camera``, so one store can use several detectors).

Needs the local Kafka and Redis (``facestream stack up``) and ``$FACESTREAM_DATASETS``. Every run
uses topics, groups and Redis keys of its own and deletes them afterwards. Run from the project
root (5-6 minutes on two cores; ``--quick`` is a smoke check of about 30 s); results and
their reading are in docs/pipeline-benchmarks.md::

    .venv/bin/python -m benchmarks.pipeline [--quick] [--json out.json]

``--rebuild-sizes N [N ...]`` runs only the take-over measurement (a shard and a member tier
rebuilt from changelogs of N records each, and where the shard's time goes), at each size.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from facestream.services.detector.cli import limit_threads

PACKAGES = ("dlib-bin", "faiss-cpu", "kafka-python", "numpy", "pillow", "pydantic", "redis")
SECTIONS = ("detector", "matcher", "latency", "scaling", "store-scaling")


class LoadSampler(threading.Thread):
    """The 1-minute load average every few seconds, to say how busy the machine was."""

    def __init__(self, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.monotonic(), os.getloadavg()[0]))
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)

    def between(self, start: float, end: float) -> list[float]:
        return [load for t, load in self.samples if start <= t <= end]


@contextmanager
def section(name: str, sampler: LoadSampler, out: dict[str, Any]) -> Iterator[None]:
    print(f"[{time.strftime('%H:%M:%S')}] {name}...", file=sys.stderr, flush=True)
    started = time.monotonic()
    yield
    ended = time.monotonic()
    loads = sampler.between(started, ended) or [os.getloadavg()[0]]
    out[name] = {"seconds": ended - started, "load_min": min(loads), "load_max": max(loads)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny versions of every measurement")
    p.add_argument("--json", type=Path, help="also write every raw result to this file")
    p.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
        help="run only these sections (repeatable)",
    )
    p.add_argument(
        "--rebuild-sizes",
        type=int,
        nargs="+",
        metavar="N",
        help="run only the changelog rebuilds (take-over), with N records at each size",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # Workers get the environment as it was: each detector limits its own threads, and the
    # matcher's threads are its own business. This process measures one core.
    worker_env = dict(os.environ)
    limit_threads()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    # Heavy imports (numpy, dlib, faiss) only now, after the thread limits.
    from benchmarks.pipeline import rebuild
    from benchmarks.pipeline.report import report
    from benchmarks.pipeline.runs import FULL, QUICK, Runs
    from benchmarks.pipeline.workers import sweep

    plan = QUICK if args.quick else FULL
    sampler = LoadSampler()
    sampler.start()
    runs = Runs(plan=asdict(plan), quick=args.quick)
    runs.start(PACKAGES)
    only = set() if args.rebuild_sizes else set(args.only or SECTIONS)
    try:
        if args.rebuild_sizes:
            with section("rebuild", sampler, runs.sections):
                rebuilds = rebuild.measure_sizes(runs.base, runs.engine, args.rebuild_sizes)
            runs.matcher_results = {"rebuilds": rebuilds}
        if "detector" in only:
            with section("detector", sampler, runs.sections):
                runs.detector(plan)
        if "matcher" in only:
            with section("matcher", sampler, runs.sections):
                runs.matcher(plan)
        if "latency" in only:
            with section("latency", sampler, runs.sections):
                runs.latency(plan, worker_env)
        if "scaling" in only:
            with section("scaling", sampler, runs.sections):
                runs.scaling(plan, worker_env)
        if "store-scaling" in only:
            with section("store-scaling", sampler, runs.sections):
                runs.store_scaling(plan, worker_env)
    finally:
        sampler.stop()
        sweep()
    runs.finish([load for _, load in sampler.samples])
    if args.rebuild_sizes:
        load = runs.sections["rebuild"]
        print(rebuild.report(runs.matcher_results["rebuilds"]))
        print(f"\nLoad average (1 min) during it: {load['load_min']:.1f}-{load['load_max']:.1f}")
    else:
        print(report(runs))
    if args.json:
        args.json.write_text(json.dumps(runs.as_dict(), indent=2, default=str))


if __name__ == "__main__":
    main()
