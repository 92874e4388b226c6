"""Detector frames per second on one core: ``DetectorHandler.handle`` on in-memory records.

The cases are measured in rounds, each round running every case (in a rotating order), so that
a burst of load from other processes on a shared machine lands on all cases alike; medians are
over rounds. Wall time and this thread's CPU time are both kept: their ratio shows how much of
the wall time was spent waiting for a core.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from benchmarks.common import median
from benchmarks.pipeline.frames import Frames, frame_record
from facestream.core.engine import FaceEngine
from facestream.core.images import load_image
from facestream.runtime.runner import Record
from facestream.services.detector.worker import DetectorHandler

TOPIC = "bench.frames.v1"
STORE = "store-1"


@dataclass(frozen=True)
class Case:
    name: str
    height: int
    faces: int
    data: bytes


@dataclass(frozen=True)
class CaseResult:
    name: str
    frame: str
    kb: float
    wall: list[float]
    """Seconds per frame, one value per round."""
    cpu: list[float]

    @property
    def fps(self) -> float:
        return 1.0 / median(self.wall)

    @property
    def cpu_fps(self) -> float:
        return 1.0 / median(self.cpu)


def cases(frames: Frames) -> list[Case]:
    out = [Case(f"{h}p, one face", h, 1, data) for h, data in frames.one_face.items()]
    out += [Case(f"{h}p, no face", h, 0, data) for h, data in frames.empty.items()]
    return out


def _records(case: Case, count: int, start: int) -> list[Record]:
    now = datetime.now(UTC)
    return [
        frame_record(TOPIC, STORE, case.data, now, f"{case.name}-{start + i}.jpg", start + i)
        for i in range(count)
    ]


def measure_handler(
    engine: FaceEngine, frames: Frames, rounds: int, per_round: int
) -> list[CaseResult]:
    """Seconds per ``handle`` call, per case and round (after one untimed warm-up call)."""
    handler = DetectorHandler(engine, encodings_topic="bench.encodings.v1")
    todo = cases(frames)
    for case in todo:
        got = len(handler.handle(_records(case, 1, 0)[0]))
        if got != case.faces:
            raise RuntimeError(f"{case.name}: {got} observations, expected {case.faces}")
    wall: dict[str, list[float]] = {c.name: [] for c in todo}
    cpu: dict[str, list[float]] = {c.name: [] for c in todo}
    for r in range(rounds):
        for case in todo[r % len(todo) :] + todo[: r % len(todo)]:
            records = _records(case, per_round, 1 + r * per_round)
            started, cpu_started = time.perf_counter(), time.thread_time()
            for record in records:
                handler.handle(record)
            wall[case.name].append((time.perf_counter() - started) / per_round)
            cpu[case.name].append((time.thread_time() - cpu_started) / per_round)
    return [
        CaseResult(
            c.name,
            f"{_size(c.data)}",
            len(c.data) / 1024,
            wall[c.name],
            cpu[c.name],
        )
        for c in todo
    ]


def _size(data: bytes) -> str:
    h, w = load_image(data).shape[:2]
    return f"{w}x{h}"


def _ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return median(times) * 1e3


def breakdown(engine: FaceEngine, data: bytes, repeats: int) -> dict[str, float]:
    """Median milliseconds of each step of one frame: decode, detect, gate + landmarks +
    encoding, and the rest of ``handle`` (headers, observation message)."""
    handler = DetectorHandler(engine, encodings_topic="bench.encodings.v1")
    record = frame_record(TOPIC, STORE, data, datetime.now(UTC), "breakdown.jpg")
    rgb = load_image(data)
    decode = _ms(lambda: load_image(data), repeats)
    detect = _ms(lambda: engine.detect(rgb), repeats)
    faces = _ms(lambda: engine.faces(rgb), repeats)
    handle = _ms(lambda: handler.handle(record), repeats)
    return {
        "decode_ms": decode,
        "detect_ms": detect,
        "encode_ms": max(0.0, faces - detect),
        "other_ms": max(0.0, handle - decode - faces),
        "handle_ms": handle,
    }


def spread(values: list[float]) -> float:
    """(max - min) / median of per-round values: how much the rounds disagreed."""
    arr = np.asarray(values)
    return float((arr.max() - arr.min()) / np.median(arr)) if arr.size else float("nan")
