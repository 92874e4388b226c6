"""The stack's own processes: install steps run to a log, daemons known by pid file, a lock.

A process counts as ours only when its pid file names it *and* its command line carries the
marker the stack gave it, so a stale pid file never makes ``down`` signal a stranger.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from facestream.devstack.config import HOST, StackConfig, StackError

log = logging.getLogger(__name__)

# Popen objects of the processes started here, kept so that Python does not warn about a
# still-running child when the object would otherwise be collected, and so poll() can reap it.
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


def port_open(port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log, for error messages."""
    try:
        content = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"({path} not readable)"
    return "\n".join(content[-lines:])


def tail_last_run(path: Path, lines: int = 30) -> str:
    """Like :func:`tail`, but only what the latest start wrote after its ``---`` banner."""
    try:
        content = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"({path} not readable)"
    last = content.rsplit("\n--- ", 1)[-1].splitlines()[1:]
    return "\n".join(last[-lines:]) or "(nothing)"


def run_logged(cmd: Sequence[str], log_path: Path, timeout: float, what: str) -> None:
    """Run an install step with its output in ``log_path``; raise with the tail if it fails."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log_path.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            rc = subprocess.run(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            raise StackError(f"{what} took over {timeout:.0f}s; see {log_path}") from None
        except FileNotFoundError:
            raise StackError(f"{what}: {cmd[0]} not found") from None
    if rc != 0:
        raise StackError(f"{what} failed (exit {rc}); last lines of {log_path}:\n{tail(log_path)}")


def spawn_detached(cmd: Sequence[str], cwd: Path, out: IO[bytes]) -> int:
    """Start a long-running service with its output in ``out``; return its pid.

    A new session: Ctrl-C in the terminal that ran ``up`` must not take the service down.
    """
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _SPAWNED[proc.pid] = proc
    return proc.pid


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int, marker: str) -> bool:
    """True if ``pid`` runs and its command line contains ``marker``.

    The marker guards against pid reuse: a stale pid file must never make us signal a stranger.
    Zombies count as dead (``kill(pid, 0)`` alone would say they live). A child this Python
    process started and has not reaped is alive without the marker check: its pid cannot have
    been reused, and its command line reads empty for a moment while it starts.
    """
    proc = _SPAWNED.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return True
        # Exited; or reaped elsewhere, which poll() cannot tell apart (it then reports 0): the
        # /proc check below settles it.
        _SPAWNED.pop(pid, None)
    proc_dir = Path("/proc") / str(pid)
    for _ in range(_EMPTY_CMDLINE_RETRIES):
        try:
            stat = (proc_dir / "stat").read_text(encoding="ascii", errors="replace")
            raw = (proc_dir / "cmdline").read_bytes()
        except OSError:
            return False
        state = stat.rsplit(")", 1)[-1].split()[:1]
        if state and state[0] in ("Z", "X"):
            return False
        if raw:
            return marker in raw.replace(b"\0", b" ").decode(errors="replace")
        # A process in the middle of exec has no command line yet: look again shortly.
        time.sleep(0.01)
    return False


_EMPTY_CMDLINE_RETRIES = 50
"""Reads of an empty command line before a running process counts as not ours (0.5 s)."""


def managed_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` if that process still runs; a stale pid file is removed."""
    pid = _read_pid(pid_file)
    if pid is None:
        return None
    if pid_alive(pid, marker):
        return pid
    with contextlib.suppress(OSError):
        pid_file.unlink()
    return None


def terminate(pid: int, marker: str, name: str, timeout: float) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL: a bounded, clean stop."""
    if not pid_alive(pid, marker):
        return
    log.info("stopping %s (pid %d)", name, pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return
        time.sleep(0.2)
    log.warning("%s (pid %d) did not stop in %.0fs; sending SIGKILL", name, pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and pid_alive(pid, marker):
        time.sleep(0.1)


def forget(pid: int) -> None:
    """Drop a stopped process from the ones this Python process started."""
    _SPAWNED.pop(pid, None)


@contextlib.contextmanager
def locked(cfg: StackConfig, timeout: float = 900.0) -> Iterator[None]:
    """Serialize up/down across processes: two concurrent ``up`` would start two brokers."""
    cfg.root.mkdir(parents=True, exist_ok=True)
    with (cfg.root / "stack.lock").open("a+") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StackError(
                        f"another `facestream stack` command holds {cfg.root / 'stack.lock'}"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
