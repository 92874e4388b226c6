"""Detection at the edge: what a store's uplink carries when its camera publishes observations
(``facestream camera --detect``) instead of frames, and what the detection costs the edge box.

    python -m benchmarks.video.edge [--seeds 3] [--people 4] [--returning 2] [--fps 5]
        [--hamilton PATH | --no-hamilton]

Renders a walk-by clip per seed (:mod:`facestream.tools.walkby`) and reads the real clip
``video/short_hamilton_clip.mp4`` of the shared data. Each clip is read as the camera reads a
video (:func:`facestream.services.camera.video.frames_from_video`: at most ``--fps`` frames a
second, JPEG at quality 90), and each frame goes through the edge's code twice, in the same run:
``faces``, every face of every frame an observation
(:func:`facestream.core.detection.observe_frame`, as with ``FACESTREAM_DETECTOR_VIDEO_PASSES``
off), and ``passes``, one observation per person pass (:class:`facestream.core.passes.VideoPasses`,
the default; tuned as the detector is by default). Sizes are
of the records as the camera would send them (key, value and headers,
:func:`facestream.services.camera.edge.record_bytes`): a frame keyed by its store with its
``FrameMeta`` headers, an observation keyed by its store. No broker is involved: the bytes are
the records', before Kafka's framing (no compression is configured).

Per clip and mode it prints the frames and their bytes, the observations and theirs, the share
of the frames' bytes the observations are, bytes per person pass where the truth knows the
passes, the faces encoded, and the detection time per frame, with the cores one camera at
``--fps`` needs for it. The two modes' times are measured in one run: compare their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import fmt, load_average, markdown_table
from facestream.core.detection import DetectorSettings, observation_key, observe_frame
from facestream.core.engine import FaceEngine
from facestream.core.passes import VideoPasses
from facestream.services.camera.edge import record_bytes
from facestream.services.camera.publisher import frame_meta
from facestream.services.camera.video import frames_from_video
from facestream.tools import walkby

STORE = "store-1"
CAMERA = "door"
START = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@dataclass
class ClipSizes:
    """What one clip sent, and cost, through the edge's code."""

    frames: int = 0
    frame_bytes: int = 0
    observations: int = 0
    observation_bytes: int = 0
    frames_with_faces: int = 0
    encoded: int = 0
    """Faces encoded (every gated face, or the tracker's few per pass)."""
    seconds: list[float] = field(default_factory=list)
    """Wall time of each frame's decode, detection and encoding."""

    def add(self, other: ClipSizes) -> None:
        """Count ``other``'s frames in too (the totals over clips)."""
        self.frames += other.frames
        self.frame_bytes += other.frame_bytes
        self.observations += other.observations
        self.observation_bytes += other.observation_bytes
        self.frames_with_faces += other.frames_with_faces
        self.encoded += other.encoded
        self.seconds += other.seconds


MODES = ("faces", "passes")


def measure(video: Path, fps: float, engine: FaceEngine, mode: str) -> ClipSizes:
    """Run the clip's frames through the edge's code and count the bytes both ways."""
    sizes = ClipSizes()
    passes = VideoPasses.from_settings(engine, DetectorSettings()) if mode == "passes" else None
    for frame in frames_from_video(str(video), CAMERA, fps=fps, clock=lambda: START):
        meta = frame_meta(STORE, frame)
        started = time.perf_counter()
        if passes is not None:
            passed = passes.frame(meta, frame.data)
            found, observations = passed.faces, passed.observations
        else:
            seen = observe_frame(engine, meta, frame.data)
            found, observations = len(seen.faces), list(seen.observations)
            sizes.encoded += len(observations)
        sizes.seconds.append(time.perf_counter() - started)
        sizes.frames += 1
        sizes.frame_bytes += record_bytes(meta.store_id.encode(), frame.data, meta.to_headers())
        sizes.frames_with_faces += bool(found)
        sizes.observations += len(observations)
        sizes.observation_bytes += sum(
            record_bytes(observation_key(o), o.to_bytes()) for o in observations
        )
    if passes is not None:
        sizes.encoded = sum(c.tracker.encoded for c in passes.cameras.values())
        started = time.perf_counter()
        ended = passes.end_all()
        sizes.seconds[-1] += time.perf_counter() - started
        sizes.observations += len(ended)
        sizes.observation_bytes += sum(
            record_bytes(observation_key(o), o.to_bytes()) for o in ended
        )
    return sizes


HEADERS = [
    "clip",
    "mode",
    "frames",
    "bytes/frame",
    "frames with a face",
    "faces encoded",
    "observations",
    "bytes/observation",
    "observation bytes / frame bytes",
    "passes",
    "KB/pass (observations)",
    "KB/pass (frames)",
    "detect ms/frame (median)",
    "cores per camera",
]


def row(name: str, mode: str, sizes: ClipSizes, passes: int | None, fps: float) -> list[object]:
    mean_seconds = statistics.fmean(sizes.seconds) if sizes.seconds else 0.0
    return [
        name,
        mode,
        sizes.frames,
        round(sizes.frame_bytes / max(1, sizes.frames)),
        sizes.frames_with_faces,
        sizes.encoded,
        sizes.observations,
        round(sizes.observation_bytes / max(1, sizes.observations)),
        fmt(sizes.observation_bytes / max(1, sizes.frame_bytes), 3),
        passes if passes is not None else "-",
        fmt(sizes.observation_bytes / passes / 1024, 1) if passes else "-",
        fmt(sizes.frame_bytes / passes / 1024, 0) if passes else "-",
        fmt(statistics.median(sizes.seconds) * 1000, 0) if sizes.seconds else "-",
        # The mean, not the median, sets the load: a camera at fps frames a second.
        fmt(mean_seconds * fps, 2),
    ]


def main() -> None:
    datasets = Path(os.environ.get("FACESTREAM_DATASETS", "../shared/datasets"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[3])
    parser.add_argument("--people", type=int, default=4)
    parser.add_argument("--returning", type=int, default=2)
    parser.add_argument("--clip-fps", type=float, default=10.0, help="fps of the rendered clips")
    parser.add_argument("--fps", type=float, default=5.0, help="frames a second the camera sends")
    parser.add_argument("--images", type=Path, default=datasets / "lfw-fold1" / "images")
    parser.add_argument(
        "--hamilton", type=Path, default=datasets / "video" / "short_hamilton_clip.mp4"
    )
    parser.add_argument("--no-hamilton", action="store_true")
    args = parser.parse_args()
    engine = FaceEngine(DetectorSettings().engine_config())
    print(f"load average at start: {load_average()}", flush=True)
    rows: list[list[object]] = []
    totals, total_passes = {mode: ClipSizes() for mode in MODES}, 0
    for seed in args.seeds:
        plan = walkby.ClipPlan(
            people=args.people, returning=args.returning, fps=args.clip_fps, seed=seed
        )
        with tempfile.TemporaryDirectory() as tmp:
            walkby.render(args.images, Path(tmp), plan, engine)
            passes = len(walkby.load_truth(Path(tmp))["passes"])
            for mode in MODES:
                sizes = measure(Path(tmp) / walkby.CLIP, args.fps, engine, mode)
                rows.append(row(f"walk-by seed {seed}", mode, sizes, passes, args.fps))
                totals[mode].add(sizes)
                print(f"seed {seed}: {rows[-1]}", flush=True)
        total_passes += passes
    if len(args.seeds) > 1:
        for mode in MODES:
            rows.append(row("all walk-by", mode, totals[mode], total_passes, args.fps))
    if not args.no_hamilton:
        for mode in MODES:
            sizes = measure(args.hamilton, args.fps, engine, mode)
            rows.append(row("hamilton", mode, sizes, None, args.fps))
    print()
    print(f"camera at {fmt(args.fps, 1)} frames/s; load average at end: {load_average()}")
    print(markdown_table(HEADERS, rows))


if __name__ == "__main__":
    main()
