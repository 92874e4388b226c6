"""``facestream detector`` / ``python -m facestream.services.detector``: run the detector stage.

What is the detector's own: the thread limits, the engine and the :class:`DetectorHandler` over
``frames.v1``. Settings, logging, /metrics, signals and start-up errors are
:func:`~facestream.runtime.entry.run_worker`'s, as for every worker.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from facestream.runtime.entry import Subscription
    from facestream.runtime.settings import PipelineSettings
    from facestream.services.detector.worker import DetectorSettings

# Each process is one detector on one core: scale by processes (partitions), never by threads
# inside one process, which would only fight over the cores.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads() -> None:
    """One BLAS/OpenMP thread per process unless the environment says otherwise.

    Only takes effect for libraries loaded afterwards: ``__main__`` calls it before any import.
    """
    for name in _THREAD_VARS:
        os.environ.setdefault(name, "1")


FETCH_BYTES = 256 * 1024
"""The most one fetch brings of a ``frames.v1`` partition (a few frames; a larger frame still
comes whole). kafka-python hands out one partition's fetched records before the next's: with
its default of 1 MiB, a detector with a backlog worked through 50-100 frames of one camera
before the next camera's, and that camera, silent meanwhile, stopped holding its store's faces
in the matcher's capture order (docs/pipeline.md, "Capture order")."""


def subscribe(
    pipeline: PipelineSettings, detector: DetectorSettings, _resources: ExitStack
) -> Subscription:
    """The detector's handler over ``frames.v1`` (loads the dlib models)."""
    from facestream.core.engine import FaceEngine
    from facestream.core.passes import VideoPasses
    from facestream.runtime.entry import Subscription
    from facestream.services.detector.worker import DetectorHandler

    engine = FaceEngine(detector.engine_config())
    passes = VideoPasses.from_settings(engine, detector) if detector.video_passes else None
    return Subscription(
        DetectorHandler(
            engine,
            encodings_topic=pipeline.topics.encodings,
            passes=passes,
            progress=detector.progress,
        ),
        topic=pipeline.topics.frames,
        max_batch=detector.max_batch,
        # A store's cameras are on several partitions: a backlog goes through them in capture
        # order, so that none of them looks silent to the matcher's capture order meanwhile.
        time_order=True,
        # Static membership (KIP-345) when configured, as the sink's.
        consumer_options={
            "max_partition_fetch_bytes": FETCH_BYTES,
            **(
                {"group_instance_id": detector.group_instance_id}
                if detector.group_instance_id
                else {}
            ),
        },
        note=f"-> {pipeline.topics.encodings}, fallbacks {','.join(detector.fallbacks) or 'none'}"
        f", video {'passes' if passes else 'face by face'}",
    )


def run_detector(max_idle_seconds: float | None = None, log_level: str | None = None) -> None:
    """Run the detector stage with settings from the environment until stopped."""
    limit_threads()
    # Heavy imports (dlib, numpy, the Kafka client) after the thread limits are in the environment.
    from facestream.runtime.entry import Worker, run_worker
    from facestream.services.detector.worker import STAGE, DetectorSettings

    run_worker(
        Worker(STAGE, DetectorSettings, subscribe),
        max_idle_seconds=max_idle_seconds,
        log_level=log_level,
    )


@click.command("detector")
@click.option(
    "--max-idle-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Exit once no frame has arrived for this long (replays, tests). Default: run forever.",
)
@click.option(
    "--log-level",
    default=None,
    help="Python log level [default: $FACESTREAM_LOG_LEVEL or INFO].",
)
def detector_command(max_idle_seconds: float | None, log_level: str | None) -> None:
    """Find and encode faces in camera frames (frames.v1 -> encodings.v1).

    Settings come from FACESTREAM_* (Kafka, topic prefix, metrics port) and
    FACESTREAM_DETECTOR_* (max_detect_side, min_face_px, min_sharpness, fallbacks,
    max_pixels, max_batch).
    """
    run_detector(max_idle_seconds=max_idle_seconds, log_level=log_level)
