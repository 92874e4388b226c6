"""``facestream detector`` / ``python -m facestream.services.detector``: run the detector stage.

Builds the settings, configures logging, serves /metrics, and runs a :class:`Runner` over
``frames.v1`` with a :class:`DetectorHandler` until SIGTERM/SIGINT (or, with
``--max-idle-seconds``, until the input has been idle that long: for replays and tests).
"""

from __future__ import annotations

import logging
import os

import click

log = logging.getLogger(__name__)

# Each process is one detector on one core: scale by processes (partitions), never by threads
# inside one process, which would only fight over the cores.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads() -> None:
    """One BLAS/OpenMP thread per process unless the environment says otherwise.

    Only takes effect for libraries loaded afterwards: ``__main__`` calls it before any import.
    """
    for name in _THREAD_VARS:
        os.environ.setdefault(name, "1")


def run_detector(max_idle_seconds: float | None = None, log_level: str | None = None) -> None:
    """Run the detector stage with settings from the environment until stopped."""
    limit_threads()
    # Heavy imports (dlib, the Kafka client) after the thread limits are in the environment.
    from facestream.core.engine import FaceEngine
    from facestream.runtime.logs import configure_logging
    from facestream.runtime.metrics import serve_metrics
    from facestream.runtime.runner import Runner
    from facestream.runtime.settings import PipelineSettings
    from facestream.services.detector.worker import DetectorHandler, DetectorSettings

    settings = PipelineSettings()
    detector = DetectorSettings()
    configure_logging(log_level or settings.log_level)
    serve_metrics(settings.metrics_port)
    engine = FaceEngine(detector.engine_config())
    handler = DetectorHandler(engine, encodings_topic=settings.topics.encodings)
    runner = Runner(
        handler,
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topics.frames,
        group=settings.group("detector"),
        max_batch=detector.max_batch,
    )
    runner.install_signal_handlers()
    log.info(
        "detector: %s -> %s, group %s, batch %d, fallbacks %s",
        settings.topics.frames,
        settings.topics.encodings,
        settings.group("detector"),
        detector.max_batch,
        ",".join(detector.fallbacks) or "none",
    )
    runner.run(max_idle_seconds=max_idle_seconds)


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
