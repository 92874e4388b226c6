"""Runs of their own on the real broker: fresh topics, groups and Redis keys, worker processes
started the way ``facestream replay`` and the pipeline tests start them (``python -m
services.<stage>`` with ``PipelineSettings.to_env()``) and stopped with SIGTERM, and CPU
accounting from /proc.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kafka import KafkaAdminClient

from facestream.devstack import stack
from facestream.devstack.workers import spawn_worker, stop_workers
from facestream.runtime import kafka_clients
from facestream.runtime.redis_clients import redis_client
from facestream.runtime.settings import PipelineSettings
from facestream.runtime.topics import DEFAULT_PARTITIONS
from facestream.tools import replay

log = logging.getLogger(__name__)

PARTITIONS = DEFAULT_PARTITIONS
PIPELINE_STAGES = ("detector", "matcher", "sink")

_USED: list[PipelineSettings] = []
"""Every pipeline this process made, for :func:`sweep`."""


def _clk_tck() -> int:
    return int(os.sysconf("SC_CLK_TCK"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields after "(comm)": state is [0], utime [11], stime [12].
    return (int(fields[11]) + int(fields[12])) / _clk_tck()


@dataclass
class MachineCpu:
    """Cores the whole machine kept busy (and lost to the hypervisor) since ``mark``."""

    busy: float = 0.0
    steal: float = 0.0
    at: float = 0.0

    @staticmethod
    def _read() -> tuple[float, float]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return (user + nice + system + irq + softirq) / _clk_tck(), steal / _clk_tck()

    def mark(self) -> None:
        self.busy, self.steal = self._read()
        self.at = time.monotonic()

    def since(self) -> dict[str, float]:
        busy, steal = self._read()
        wall = max(time.monotonic() - self.at, 1e-9)
        return {"busy_cores": (busy - self.busy) / wall, "steal_cores": (steal - self.steal) / wall}


# -- a run of its own ------------------------------------------------------------------------


@contextmanager
def fresh_pipeline(base: PipelineSettings, label: str) -> Iterator[PipelineSettings]:
    """Settings with a new topic, group and Redis prefix; its topics exist while in use and
    are deleted (with its Redis keys) afterwards."""
    tag = f"bench{label}{uuid.uuid4().hex[:8]}"
    stack.ensure_topics(PARTITIONS, prefix=f"{tag}.")
    settings = base.model_copy(
        update={"topic_prefix": f"{tag}.", "group_prefix": tag, "redis_prefix": tag}
    )
    _USED.append(settings)
    try:
        yield settings
    finally:
        _clean(settings)


def sweep() -> None:
    """Delete again whatever topics of this process's pipelines exist. A broker that still
    auto-creates topics (one started before the stack disabled that) re-creates a deleted topic
    when a later client of this process refreshes metadata that still names it."""
    if not _USED:
        return
    admin = kafka_clients.admin(_USED[0])
    try:
        prefixes = tuple(s.topic_prefix for s in _USED)
        left = [t for t in admin.list_topics() if t.startswith(prefixes)]
        if left:
            log.info("deleting re-created topics: %s", ", ".join(sorted(left)))
            admin.delete_topics(left)
    except Exception as exc:  # cleanup must not hide the run's own result
        log.warning("could not sweep topics: %s", exc)
    finally:
        admin.close()


def _clean(settings: PipelineSettings) -> None:
    """Delete this run's topics, consumer groups and Redis keys (best effort: leftovers only
    cost disk)."""
    admin = kafka_clients.admin(settings)
    try:
        mine = [t for t in admin.list_topics() if t.startswith(settings.topic_prefix)]
        if mine:
            admin.delete_topics(mine)
        groups = {settings.group(stage) for stage, _ in replay.STAGES}
        found = [g["group_id"] for g in admin.list_groups() if g["group_id"] in groups]
        if found:
            admin.delete_groups(found)
    except Exception as exc:  # cleanup must not hide the run's own result
        log.warning("could not clean up %s*: %s", settings.topic_prefix, exc)
    finally:
        admin.close()
    client = redis_client(settings)
    try:
        keys = list(client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# -- worker processes ------------------------------------------------------------------------


@dataclass
class Worker:
    stage: str
    proc: subprocess.Popen[bytes]
    log: Path
    cpu_start: float = 0.0


@dataclass
class Workers:
    """Worker subprocesses of one pipeline; stopped with SIGTERM on exit."""

    settings: PipelineSettings
    env: Mapping[str, str]
    logdir: Path
    started: list[Worker] = field(default_factory=list)
    _files: list[IO[bytes]] = field(default_factory=list)
    _machine: MachineCpu = field(default_factory=MachineCpu)

    def start(self, stage: str, extra: Mapping[str, str] | None = None) -> Worker:
        log = self.logdir / f"{self.settings.group_prefix}-{stage}-{len(self.started)}.log"
        fh = log.open("wb")
        self._files.append(fh)
        proc = spawn_worker(
            stage,
            self.settings,
            extra_env=extra,
            base_env=self.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        worker = Worker(stage, proc, log)
        self.started.append(worker)
        return worker

    def wait_ready(self, counts: Mapping[str, int], timeout: float) -> float:
        """Wait until each stage's group is stable with ``counts[stage]`` members that share
        every partition; returns the seconds waited."""
        started = time.monotonic()
        admin = kafka_clients.admin(self.settings)
        try:
            while True:
                self._check_alive()
                if all(self._ready(admin, stage, n) for stage, n in counts.items()):
                    return time.monotonic() - started
                if time.monotonic() - started > timeout:
                    raise RuntimeError(
                        f"workers not ready in {timeout:.0f} s; logs in {self.logdir}"
                    )
                time.sleep(0.2)
        finally:
            admin.close()

    def _ready(self, admin: KafkaAdminClient, stage: str, members: int) -> bool:
        group = self.settings.group(stage)
        try:
            info = admin.describe_groups([group]).get(group, {})
        except Exception:  # not known to the coordinator yet
            return False
        if info.get("group_state") != "Stable" or len(info.get("members") or []) != members:
            return False
        assigned = 0
        for member in info["members"]:
            for part in (member.get("member_assignment") or {}).get("assigned_partitions", []):
                assigned += len(part["partitions"])
        return assigned == PARTITIONS

    def _check_alive(self) -> None:
        for w in self.started:
            if w.proc.poll() is not None:
                tail = w.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{w.stage} exited with {w.proc.returncode}:\n{tail}")

    def start_pipeline(self, timeout: float = 120) -> float:
        """One detector, one matcher and one sink, ready; returns the seconds waited."""
        for stage in PIPELINE_STAGES:
            self.start(stage)
        return self.wait_ready(dict.fromkeys(PIPELINE_STAGES, 1), timeout=timeout)

    def cpu_by_stage(self) -> dict[str, float]:
        """CPU seconds each pipeline stage's workers used since :meth:`mark_cpu`."""
        return {s: sum(self.cpu_since_mark(s)) for s in PIPELINE_STAGES}

    def mark_cpu(self) -> None:
        """Start counting the workers' CPU, and the whole machine's (:meth:`machine_cores`)."""
        for w in self.started:
            w.cpu_start = cpu_seconds(w.proc.pid)
        self._machine.mark()

    def machine_cores(self) -> dict[str, float]:
        """Cores the whole machine kept busy (and lost to steal) since :meth:`mark_cpu`."""
        return self._machine.since()

    def cpu_since_mark(self, stage: str) -> list[float]:
        return [cpu_seconds(w.proc.pid) - w.cpu_start for w in self.started if w.stage == stage]

    def stop(self) -> None:
        stop_workers((w.stage, w.proc) for w in self.started)
        for fh in self._files:
            fh.close()


@contextmanager
def workers(settings: PipelineSettings, env: Mapping[str, str], logdir: Path) -> Iterator[Workers]:
    ws = Workers(settings, env, logdir)
    try:
        yield ws
    finally:
        ws.stop()
