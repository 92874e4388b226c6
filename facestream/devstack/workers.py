"""Pipeline workers run locally, as ``python -m facestream.services.<stage>``, and stopped cleanly.

``facestream replay`` and the pipeline benchmarks both start workers this way: the settings
travel as ``FACESTREAM_*`` variables (:meth:`PipelineSettings.to_env`), exactly as a deployment
passes them, and each worker is stopped with SIGTERM so that it commits what it has done.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from contextlib import suppress
from typing import IO, Any

from facestream.runtime.settings import PipelineSettings

log = logging.getLogger(__name__)

STOP_TIMEOUT = 30.0
"""Seconds a worker gets after SIGTERM to finish its batch and commit before it is killed."""

_Output = int | IO[Any] | None


def worker_env(
    settings: PipelineSettings,
    extra: Mapping[str, str] | None = None,
    *,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a worker: ``base`` (default: this process's), the settings, then
    ``extra``. No metrics port: many workers share one machine, and a fixed port would clash."""
    return {
        **(os.environ if base is None else base),
        **settings.to_env(),
        "FACESTREAM_METRICS_PORT": "0",
        **(extra or {}),
    }


def spawn_worker(
    stage: str,
    settings: PipelineSettings,
    *,
    extra_env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    stdout: _Output = None,
    stderr: _Output = None,
) -> subprocess.Popen[bytes]:
    """Start the ``stage`` worker (detector, matcher, sink) with ``settings``; see
    :func:`worker_env` for its environment. Output goes where ``stdout``/``stderr`` say."""
    return subprocess.Popen(
        [sys.executable, "-m", f"facestream.services.{stage}"],
        env=worker_env(settings, extra_env, base=base_env),
        stdout=stdout,
        stderr=stderr,
    )


def stop_workers(
    workers: Iterable[tuple[str, subprocess.Popen[bytes]]], timeout: float = STOP_TIMEOUT
) -> None:
    """SIGTERM every ``(stage, process)``, then wait for each (bounded); kill what does not stop.

    All are signalled before any is waited for, so they drain in parallel.
    """
    workers = list(workers)
    for _, proc in workers:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    for stage, proc in workers:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", stage, timeout)
            proc.kill()
            proc.wait()
