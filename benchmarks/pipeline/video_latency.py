"""End-to-end latency on video, live, with the detector's busy share beside it.

    python -m benchmarks.pipeline.video_latency [--fps 5] [--seconds 60] [--warmup 15]

Issue 9's target: p99 <= 1 s at 80% of the detectors' capacity, on video. The clip is the
shared real one (``video/short_hamilton_clip.mp4``: 640x360, several people), sampled at
``--fps``, looped to ``--seconds`` of video (each loop a cut: the people jump back to where
they were), followed by two seconds of an empty view so that every pass ends.

0. **Engine alone.** The frames through the detector's video passes in this process (no
   Kafka): CPU per frame, the baseline of issue 9's "per-frame cost in the pipeline within 10%
   of the engine alone".
1. **Backlog.** The frames published at once to one detector (nothing else running), timed
   until it has committed every frame: the frames/s one detector handles when it never waits.
2. **Live.** One detector, one matcher, one sink; the frames published at ``--fps`` in real
   time, each stamped with the time it is published (a live camera), keyed by camera. The
   detector's busy share (its CPU time over the wall time) is how loaded it was. The first
   ``--warmup`` seconds are not measured: a store the matcher has not heard of holds its faces
   for its first ``FACESTREAM_MATCHER_ORDER_WAIT_SECONDS`` (10 s), once per store, while its
   cameras make themselves known (docs/pipeline.md, "Capture order").

A pass is over when its person has been unseen for ``PASS_MAX_GAP_SECONDS`` (or after
``PASS_MAX_OPEN_SECONDS`` in view): ``min(last_seen + gap, captured_at + max_open)``, in the
camera's clock, which is this machine's; a pass the detector ends sooner (a track split in two
when its face turned out to be someone else's, or cut short by the clip's loop) is over when
its observation was produced. **Latency** = when this process read the pass's match event minus
that moment: the wait for the detector to see the frame that ends the pass, its
work, the matcher's (capture order included: ``FACESTREAM_MATCHER_ORDER=arrival`` in the
environment measures without it) and the sink's hops. The split uses the CreateTime each
stage's producer stamps on its output.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks.common import markdown_table
from benchmarks.pipeline.live import TopicTail, percentiles
from benchmarks.pipeline.workers import fresh_pipeline, sweep, workers
from facestream.core.datasets import datasets_root
from facestream.core.detection import DetectorSettings
from facestream.core.engine import FaceEngine
from facestream.core.passes import VideoPasses
from facestream.devstack import stack
from facestream.runtime import kafka_clients
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import FaceObservation, FrameMeta, MatchEvent, SchemaError, decode
from facestream.schemas.keys import is_progress
from facestream.services.camera.publisher import Frame, publish
from facestream.services.camera.video import frames_from_video
from facestream.tools import replay

STORE = "store-video"
CAMERA = "door"
CLIP = "video/short_hamilton_clip.mp4"
TRAILER_SECONDS = 2.0


def clip_frames(fps: float, seconds: float) -> list[bytes]:
    """The clip's JPEG frames at ``fps``, looped to ``seconds``, then an empty view."""
    path = datasets_root() / CLIP
    one = [f.data for f in frames_from_video(str(path), CAMERA, fps=fps) if isinstance(f, Frame)]
    if not one:
        raise RuntimeError(f"no frames read from {path}")
    count = max(len(one), round(seconds * fps))
    frames = [one[i % len(one)] for i in range(count)]
    width, height = Image.open(io.BytesIO(one[0])).size
    blank = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(blank, format="JPEG")
    return frames + [blank.getvalue()] * max(1, round(TRAILER_SECONDS * fps))


def as_frames(data: list[bytes], start: datetime, fps: float, run: str) -> list[Frame]:
    return [
        Frame(d, CAMERA, start + timedelta(seconds=i / fps), f"{run}#{i}", video=True)
        for i, d in enumerate(data)
    ]


def engine_alone(fps: float, seconds: float) -> dict[str, Any]:
    """The same frames through the detector's video passes in this process, no Kafka: CPU ms
    a frame (what the pipeline's detector adds to it is the runner, Kafka, and the progress)."""
    settings = DetectorSettings()
    passes = VideoPasses.from_settings(FaceEngine(settings.engine_config()), settings)
    data = clip_frames(fps, seconds)
    start = datetime.now(UTC) - timedelta(seconds=len(data) / fps)
    observations = 0
    cpu0 = time.process_time()
    for i, d in enumerate(data):
        meta = FrameMeta(
            frame_id=f"alone-{i}",
            store_id=STORE,
            camera_id=CAMERA,
            captured_at=start + timedelta(seconds=i / fps),
            video="frame",
        )
        observations += len(passes.frame(meta, d).observations)
    cpu = time.process_time() - cpu0
    return {
        "frames": len(data),
        "observations": observations,
        "cpu_ms_per_frame": cpu / len(data) * 1e3,
    }


def capacity(
    base: PipelineSettings, env: Mapping[str, str], logdir: Path, fps: float, seconds: float
) -> dict[str, Any]:
    """One detector on the clip's frames at ``fps``, published at once: frames/s."""
    data = clip_frames(fps, seconds)
    with fresh_pipeline(base, "vcap") as settings, workers(settings, env, logdir) as ws:
        ws.start("detector")
        ws.wait_ready({"detector": 1}, timeout=120)
        admin = kafka_clients.admin(settings)
        probe = kafka_clients.consumer(settings, enable_auto_commit=False)
        producer = make_producer(settings)
        try:
            # Stamped as if captured over the last len/fps seconds: the tracker's clock.
            start = datetime.now(UTC) - timedelta(seconds=len(data) / fps)
            ws.mark_cpu()
            t0 = time.monotonic()
            publish(producer, settings.topics.frames, STORE, as_frames(data, start, fps, "cap"))
            while replay.progress(settings, admin, probe).done["detector"] < len(data):
                if time.monotonic() - t0 > 900:
                    raise RuntimeError(f"capacity run not done in 900 s; logs in {logdir}")
                time.sleep(0.2)
            elapsed = time.monotonic() - t0
            cpu = sum(ws.cpu_since_mark("detector"))
        finally:
            producer.close()
            probe.close()
            admin.close()
    return {
        "fps_sampled": fps,
        "frames": len(data),
        "seconds": elapsed,
        "capacity_fps": len(data) / elapsed,
        "cpu_ms_per_frame": cpu / len(data) * 1e3,
    }


@dataclass
class Pass:
    ended_at: float
    """When the pass was over (epoch seconds), from its observation."""
    observation_at: float | None = None
    match_at: float | None = None
    read_at: float | None = None
    kind: str = ""


class VideoTail(TopicTail):
    """Each pass's observation and the first copy of its match event."""

    def __init__(self, settings: PipelineSettings, gap: float, max_open: float) -> None:
        super().__init__(settings)
        self.gap, self.max_open = gap, max_open
        self.passes: dict[str, Pass] = {}
        self.events: dict[str, tuple[float, float, str]] = {}

    def _note(self, record: Any, read_at: float) -> None:
        try:
            if record.topic == self.topics.matches:
                ev = decode(MatchEvent, record.value)
                with self.lock:
                    self.events.setdefault(
                        ev.observation_id, (record.timestamp / 1e3, read_at, ev.kind)
                    )
            elif not is_progress(record.headers):
                obs = decode(FaceObservation, record.value)
                last = obs.last_seen or obs.captured_at
                ended = min(
                    last + timedelta(seconds=self.gap),
                    obs.captured_at + timedelta(seconds=self.max_open),
                )
                with self.lock:
                    self.passes.setdefault(
                        obs.observation_id, Pass(ended.timestamp(), record.timestamp / 1e3)
                    )
        except SchemaError:
            self.undecodable += 1

    def settled(self) -> bool:
        """Whether every pass seen so far has its match event."""
        with self.lock:
            return all(k in self.events for k in self.passes)

    def joined(self) -> list[Pass]:
        with self.lock:
            out = []
            for key, p in self.passes.items():
                if key in self.events:
                    match_at, read_at, kind = self.events[key]
                    out.append(replace(p, match_at=match_at, read_at=read_at, kind=kind))
            return out


def live(
    base: PipelineSettings,
    env: Mapping[str, str],
    logdir: Path,
    fps: float,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    """Detector, matcher and sink; the clip at ``fps``, published at ``fps`` in real time;
    passes over in the first ``warmup`` seconds are not measured."""
    detector = DetectorSettings()
    data = clip_frames(fps, seconds + warmup)
    with fresh_pipeline(base, "vlive") as settings, workers(settings, env, logdir) as ws:
        ws.start_pipeline()
        tail = VideoTail(settings, detector.pass_max_gap_seconds, detector.pass_max_open_seconds)
        tail.start()
        admin = kafka_clients.admin(settings)
        probe = kafka_clients.consumer(settings, enable_auto_commit=False)
        producer = make_producer(settings)
        try:
            ws.mark_cpu()
            t0 = time.monotonic()
            measured_from = time.time() + warmup
            behind = 0

            def paced() -> Iterator[Frame]:
                """The frames at ``fps``, each stamped when it goes: one video, so one
                publish call (each call ends its videos with an end-of-video record)."""
                nonlocal behind
                for i, d in enumerate(data):
                    delay = t0 + i / fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    else:
                        behind += 1
                    yield Frame(d, CAMERA, datetime.now(UTC), f"live#{i}", video=True)

            sent = publish(producer, settings.topics.frames, STORE, paced())
            if sent.published != len(data):
                raise RuntimeError(f"{sent.published} of {len(data)} frames acknowledged")
            published_s = time.monotonic() - t0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = replay.progress(settings, admin, probe).done["detector"]
                if done >= len(data) and tail.settled():
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # the last events' copies, if any
            cpu = ws.cpu_by_stage()
            wall = time.monotonic() - t0
            cores = ws.machine_cores()
        finally:
            producer.close()
            probe.close()
            admin.close()
            tail.stop()
    every = tail.joined()
    passes = [p for p in every if p.ended_at >= measured_from]
    kinds: dict[str, int] = {}
    for p in passes:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    return {
        "fps": fps,
        "frames": len(data),
        "publish_seconds": published_s,
        "late_sends": behind,
        "passes": len(tail.passes),
        "matched": len(every),
        "measured": len(passes),
        "kinds": kinds,
        "latency": percentiles(
            [
                p.read_at - min(p.ended_at, p.observation_at or p.ended_at)
                for p in passes
                if p.read_at
            ]
        ),
        "early": sum(1 for p in passes if p.observation_at and p.observation_at < p.ended_at),
        "detector": percentiles(
            [max(0.0, p.observation_at - p.ended_at) for p in passes if p.observation_at]
        ),
        "matcher": percentiles(
            [p.match_at - p.observation_at for p in passes if p.match_at and p.observation_at]
        ),
        "delivery": percentiles(
            [p.read_at - p.match_at for p in passes if p.read_at and p.match_at]
        ),
        "cpu_share": {s: c / wall for s, c in cpu.items()},
        "others_cores": cores["busy_cores"] - sum(cpu.values()) / wall,
        "undecodable": tail.undecodable,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fps", type=float, default=5.0, help="the camera's frames/s")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds not measured")
    args = parser.parse_args()
    cfg = stack.StackConfig.from_env()
    if not stack.wait_ready(10.0, config=cfg):
        raise SystemExit("Kafka/Redis not running: start them with `facestream stack up`")
    base = PipelineSettings(
        kafka_bootstrap=stack.kafka_bootstrap(cfg), redis_url=stack.redis_url(cfg), metrics_port=0
    )
    env = dict(os.environ)
    load0 = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="video-latency-") as tmp:
            logdir = Path(tmp)
            alone = engine_alone(args.fps, args.seconds)
            backlog = capacity(base, env, logdir, args.fps, args.seconds)
            result = live(base, env, logdir, args.fps, args.seconds, args.warmup)
    finally:
        sweep()
    order = os.environ.get("FACESTREAM_MATCHER_ORDER", "capture")
    print(
        f"\nBacklog: one detector, {backlog['frames']} frames sampled at {args.fps:g}/s, "
        f"published at once: {backlog['seconds']:.1f} s, {backlog['capacity_fps']:.2f} "
        f"frames/s, {backlog['cpu_ms_per_frame']:.0f} ms of CPU a frame; the same frames "
        f"through the engine's video passes alone, in this process: "
        f"{alone['cpu_ms_per_frame']:.0f} ms a frame ({alone['observations']} passes), so the "
        f"pipeline's detector costs {backlog['cpu_ms_per_frame'] / alone['cpu_ms_per_frame']:.2f}x."
    )
    busy = result["cpu_share"]["detector"]
    print(
        f"Live ({order} order): {args.fps:g} frames/s; {result['frames']} frames in "
        f"{result['publish_seconds']:.1f} s ({result['late_sends']} sent late); detector busy "
        f"{busy:.2f} ({busy / args.fps * 1e3:.0f} ms of CPU a frame); {result['passes']} "
        f"passes, {result['matched']} matched, {result['measured']} measured (over after the "
        f"first {args.warmup:g} s) {result['kinds']}, {result['early']} of them ended by the "
        f"detector before their gap ran out; undecodable {result['undecodable']}"
    )
    rows = [
        [name, *(f"{result[key][q]:.3f}" for q in ("p50", "p95", "p99", "max"))]
        for name, key in (
            ("pass over -> match event read (**total**)", "latency"),
            ("pass over -> observation produced (detector)", "detector"),
            ("observation -> match event produced (matcher)", "matcher"),
            ("match event produced -> read", "delivery"),
        )
    ]
    print(markdown_table(["span (seconds)", "p50", "p95", "p99", "max"], rows))
    shares = ", ".join(f"{s} {c:.2f}" for s, c in result["cpu_share"].items())
    print(
        f"\nCores used while live: {shares}; everything else {result['others_cores']:.2f}. "
        f"Load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end."
    )


if __name__ == "__main__":
    main()
