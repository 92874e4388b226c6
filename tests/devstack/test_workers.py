"""Worker processes: their environment, and a stop that is bounded even for a stuck worker."""

from __future__ import annotations

import subprocess
import sys
import time

from facestream.devstack.workers import stop_workers, worker_env
from facestream.runtime.settings import PipelineSettings


def test_worker_env_layers_settings_over_the_base_and_extras_over_both() -> None:
    settings = PipelineSettings(topic_prefix="t1.", metrics_port=9100)
    env = worker_env(
        settings,
        {"FACESTREAM_SINK_MAX_BATCH": "2"},
        base={"PATH": "/bin", "FACESTREAM_TOPIC_PREFIX": "stale."},
    )
    assert env["PATH"] == "/bin"
    assert env["FACESTREAM_TOPIC_PREFIX"] == "t1."
    assert env["FACESTREAM_METRICS_PORT"] == "0"  # never a fixed port for local workers
    assert env["FACESTREAM_SINK_MAX_BATCH"] == "2"


def test_stop_workers_kills_what_ignores_sigterm() -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + (
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = time.monotonic()
    stop_workers([("stubborn", proc), ("polite", polite)], timeout=1.0)
    assert time.monotonic() - started < 10
    assert proc.returncode is not None and polite.returncode is not None
    proc.stdout.close()
