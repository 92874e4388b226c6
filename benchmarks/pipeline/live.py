"""Worker processes on the real broker: end-to-end latency, and detector scaling.

Every run gets topics, consumer groups and Redis keys of its own (see
:mod:`benchmarks.pipeline.workers`), deleted afterwards.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from kafka.structs import TopicPartition

from benchmarks.pipeline.frames import CAMERA, camera_frame
from benchmarks.pipeline.workers import PARTITIONS, fresh_pipeline, workers
from facestream.runtime import kafka_clients
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import FaceObservation, MatchEvent, SchemaError, decode
from facestream.schemas.keys import frame_key, is_progress, partition_for
from facestream.services.camera.publisher import frame_id, publish
from facestream.tools import replay

# -- end-to-end latency ----------------------------------------------------------------------


@dataclass
class Seen:
    observation_at: float | None = None
    """encodings.v1 CreateTime of the frame's observation (set by the detector's producer)."""
    match_at: float | None = None
    """matches.v1 CreateTime of its match event (set by the matcher's producer)."""
    read_at: float | None = None
    """When this process read the match event."""
    kind: str = ""


class TopicTail(threading.Thread):
    """Reads encodings.v1 and matches.v1 from their current end, handing each record to
    :meth:`_note` with the time it was read; the subclass keeps what it measures (under
    ``lock``) and counts what it cannot decode in ``undecodable``."""

    def __init__(self, settings: PipelineSettings) -> None:
        super().__init__(daemon=True)
        self.topics = settings.topics
        self.consumer = kafka_clients.consumer(settings, enable_auto_commit=False)
        tps = [
            TopicPartition(t, p)
            for t in (self.topics.encodings, self.topics.matches)
            for p in range(PARTITIONS)
        ]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the ends now, before any frame is published
            self.consumer.position(tp)
        self.undecodable = 0
        self.lock = threading.Lock()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for records in self.consumer.poll(timeout_ms=100).values():
                read_at = time.time()
                for r in records:
                    self._note(r, read_at)

    def _note(self, record: Any, read_at: float) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self.consumer.close()


class Tail(TopicTail):
    """Notes when each frame's observation and match event were produced and when the event
    was read."""

    def __init__(self, settings: PipelineSettings) -> None:
        super().__init__(settings)
        self.seen: dict[str, Seen] = {}

    def _note(self, record: Any, read_at: float) -> None:
        try:
            if record.topic == self.topics.matches:
                ev = decode(MatchEvent, record.value)
                with self.lock:
                    seen = self.seen.setdefault(ev.frame_id, Seen())
                    if seen.read_at is None:  # at-least-once: the first copy counts
                        seen.match_at, seen.read_at, seen.kind = (
                            record.timestamp / 1e3,
                            read_at,
                            ev.kind,
                        )
            elif is_progress(record.headers):
                return  # a detector's camera progress, not a face
            else:
                obs = decode(FaceObservation, record.value)
                with self.lock:
                    seen = self.seen.setdefault(obs.frame_id, Seen())
                    if seen.observation_at is None:
                        seen.observation_at = record.timestamp / 1e3
        except SchemaError:
            # Only this run's workers write these topics: counted and reported, not fatal.
            self.undecodable += 1

    def matched(self, frames: list[str]) -> int:
        with self.lock:
            return sum(1 for f in frames if f in self.seen and self.seen[f].read_at is not None)


def _wait_matched(tail: Tail, frames: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tail.matched(frames) >= len(frames):
            return True
        time.sleep(0.1)
    return False


def latency_run(
    base: PipelineSettings,
    env: Mapping[str, str],
    logdir: Path,
    frame: bytes,
    *,
    rate: float,
    seconds: float,
    warmup: int,
    drain_timeout: float,
) -> dict[str, Any]:
    """1 detector, 1 matcher and 1 sink; frames published at ``rate`` per second for
    ``seconds`` (after ``warmup`` frames whose events are awaited and not counted), each
    stamped with the time it is published. Latency = when the match event is read minus the
    frame's ``captured_at``."""
    store = "store-e2e"
    with fresh_pipeline(base, "e2e") as settings, workers(settings, env, logdir) as ws:
        ready_s = ws.start_pipeline()
        tail = Tail(settings)
        tail.start()
        producer = make_producer(settings)
        sent: dict[str, float] = {}  # frame id -> captured_at (epoch s) of measured frames
        try:

            def send(i: int) -> tuple[str, float]:
                item = camera_frame(frame, datetime.now(UTC), f"e2e-{i}.jpg")
                report = publish(producer, settings.topics.frames, store, [item], key_by="camera")
                if report.published != 1:
                    raise RuntimeError("a frame was not acknowledged by the broker")
                return frame_id(store, item), item.captured_at.timestamp()

            warm = [send(-1 - i)[0] for i in range(warmup)]
            if not _wait_matched(tail, warm, 120):
                raise RuntimeError(f"warm-up frames not matched in 120 s; logs in {logdir}")
            count = max(1, round(rate * seconds))
            ws.mark_cpu()
            t0 = time.monotonic()
            for i in range(count):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                fid, captured_at = send(i)
                sent[fid] = captured_at
            published_s = time.monotonic() - t0
            _wait_matched(tail, list(sent), drain_timeout)
            cpu = ws.cpu_by_stage()
            wall = time.monotonic() - t0
            cores = ws.machine_cores()
        finally:
            producer.close()
            tail.stop()
    summary = _latency_summary(tail, sent, rate, published_s, ready_s, cpu, wall)
    summary["machine"] = cores
    summary["others_cores"] = cores["busy_cores"] - sum(summary["cpu_share"].values())
    return summary


def _latency_summary(
    tail: Tail,
    sent: dict[str, float],
    rate: float,
    published_s: float,
    ready_s: float,
    cpu: dict[str, float],
    wall: float,
) -> dict[str, Any]:
    total, detect, match, deliver = [], [], [], []
    kinds: dict[str, int] = {}
    for fid, captured_at in sent.items():
        seen = tail.seen.get(fid)
        if seen is None or seen.read_at is None:
            continue
        total.append(seen.read_at - captured_at)
        kinds[seen.kind] = kinds.get(seen.kind, 0) + 1
        if seen.observation_at is not None and seen.match_at is not None:
            detect.append(seen.observation_at - captured_at)
            match.append(seen.match_at - seen.observation_at)
            deliver.append(seen.read_at - seen.match_at)
    return {
        "frames": len(sent),
        "events": len(total),
        "rate": rate,
        "publish_seconds": published_s,
        "ready_seconds": ready_s,
        "kinds": kinds,
        "latency": percentiles(total),
        "detector": percentiles(detect),
        "matcher": percentiles(match),
        "delivery": percentiles(deliver),
        "cpu_share": {s: c / wall for s, c in cpu.items()},
        "undecodable": tail.undecodable,
    }


def percentiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    p50, p95, p99 = np.percentile(xs, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(max(xs))}


# -- detector scaling ------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    """A camera of a store: what a ``frames.v1`` key names, and so where its frames go."""

    store: str
    camera: str

    def partition(self, partitions: int) -> int:
        """Its frames' partition (murmur2 of ``store/camera``, as the producer places them)."""
        return partition_for(frame_key(self.store, self.camera), partitions)


def one_per_partition(candidates: Iterable[Camera], partitions: int = PARTITIONS) -> list[Camera]:
    """The first camera of ``candidates`` on each partition, in partition order, so that a
    backlog published round-robin over them loads every partition alike."""
    found: dict[int, Camera] = {}
    for camera in candidates:
        found.setdefault(camera.partition(partitions), camera)
        if len(found) == partitions:
            return [found[p] for p in range(partitions)]
    raise ValueError(f"the candidates cover only {len(found)} of {partitions} partitions")


def spread_stores(partitions: int = PARTITIONS) -> list[Camera]:
    """One store per partition, each with one camera: the load of many small stores."""
    return one_per_partition((Camera(f"store-{k}", CAMERA) for k in itertools.count()), partitions)


def spread_cameras(store: str = "store-big", partitions: int = PARTITIONS) -> list[Camera]:
    """One store's cameras, one per partition: a store too busy for one detector."""
    return one_per_partition((Camera(store, f"cam-{k}") for k in itertools.count()), partitions)


def scaling_run(
    base: PipelineSettings,
    env: Mapping[str, str],
    logdir: Path,
    frame: bytes,
    *,
    cameras: list[Camera],
    detectors: int,
    backlog: int,
    timeout: float,
) -> dict[str, Any]:
    """``detectors`` detector processes (nothing else) in one group; once the group is stable,
    ``backlog`` frames are published round-robin over ``cameras``, and timed until the group
    has committed all of them."""
    with (
        fresh_pipeline(base, f"scale{detectors}") as settings,
        workers(settings, env, logdir) as ws,
    ):
        for _ in range(detectors):
            ws.start("detector")
        ready_s = ws.wait_ready({"detector": detectors}, timeout=120)
        admin = kafka_clients.admin(settings)
        probe = kafka_clients.consumer(settings, enable_auto_commit=False)
        producer = make_producer(settings)
        try:
            ws.mark_cpu()
            now = datetime.now(UTC)
            t0 = time.monotonic()
            for c, camera in enumerate(cameras):
                items = [
                    camera_frame(frame, now, f"backlog-{i}.jpg", camera.camera)
                    for i in range(c, backlog, len(cameras))
                ]
                publish(producer, settings.topics.frames, camera.store, items, key_by="camera")
            published_s = time.monotonic() - t0
            done = 0
            while done < backlog:
                if time.monotonic() - t0 > timeout:
                    raise RuntimeError(f"{detectors} detectors: {done}/{backlog} in {timeout} s")
                done = replay.progress(settings, admin, probe).done["detector"]
                if done < backlog:
                    time.sleep(0.2)
            seconds = time.monotonic() - t0
            cpu = ws.cpu_since_mark("detector")
            cores = ws.machine_cores()
        finally:
            producer.close()
            probe.close()
            admin.close()
    return {
        "detectors": detectors,
        "stores": len({c.store for c in cameras}),
        "cameras": len(cameras),
        "frames": backlog,
        "seconds": seconds,
        "fps": backlog / seconds,
        "publish_seconds": published_s,
        "ready_seconds": ready_s,
        "cpu_seconds": cpu,
        "cores_used": sum(cpu) / seconds,
        "machine_busy_cores": cores["busy_cores"],
        "others_cores": cores["busy_cores"] - sum(cpu) / seconds,
        "steal_cores": cores["steal_cores"],
        "cpu_ms_per_frame": sum(cpu) / backlog * 1e3,
        "load1": os.getloadavg()[0],
    }
