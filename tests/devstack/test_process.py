"""How the stack tells whether a service it started still runs (``pid_alive``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from facestream.devstack.process import forget, pid_alive, spawn_detached, terminate

SLEEPER = "import time; time.sleep(30)"


def test_a_child_is_alive_from_the_moment_it_is_spawned(tmp_path: Path) -> None:
    """Just after exec a process's command line can read empty (often, for the first read after
    ``Popen`` returns): CI once saw the stack take its just-started broker
    for dead, fail ``up`` and leave the broker running. A child not yet reaped cannot be a
    reused pid, so its command line is not consulted at all."""
    marker = f"--marker={tmp_path}"
    with (tmp_path / "out").open("ab") as out:
        for _ in range(5):
            pid = spawn_detached([sys.executable, "-c", SLEEPER, marker], tmp_path, out)
            try:
                assert pid_alive(pid, marker)
                assert pid_alive(pid, "--not-on-its-command-line")
            finally:
                terminate(pid, marker, "sleeper", timeout=5.0)
            assert not pid_alive(pid, marker)
            forget(pid)


def test_a_process_started_elsewhere_is_known_by_its_marker(tmp_path: Path) -> None:
    marker = f"--marker={tmp_path}"
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, marker])
    try:
        deadline = time.monotonic() + 10
        while not pid_alive(proc.pid, marker):  # a pid file read by another `stack` command
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not pid_alive(proc.pid, "--marker=someone-else")
        proc.kill()
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # a zombie until reaped: both count as dead
        assert not pid_alive(proc.pid, marker)
    finally:
        proc.kill()
        proc.wait(timeout=10)
