"""A Kafka broker and a redis-server of one test module's own, to restart at will.

The shared stack (127.0.0.1:9092/6379) serves every other test running in parallel: it is never
restarted. This one runs the devstack's own broker and Redis (:mod:`facestream.devstack`) on free
ports, with its own data folder, the Kafka jars of the shared stack (linked, never downloaded
again) and Redis with an append-only file, as deployments must have (docs/deploy.md, "Redis").
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from facestream.devstack import kafka_broker, redis_server, stack
from facestream.devstack.install import kafka_installed
from facestream.devstack.process import managed_pid, pid_alive, terminate
from facestream.runtime.settings import PipelineSettings

PARTITIONS = 4
READY_SECONDS = 90.0
"""Longest wait for the broker (or Redis) to answer after a start."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 now (bound together, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class PrivateStack:
    """One broker and one Redis under ``root``; :meth:`up` before use, :meth:`down` after."""

    def __init__(self, root: Path) -> None:
        shared = stack.StackConfig.from_env()
        if not kafka_installed(shared):
            message = f"Kafka is not installed in {shared.lib_dir}: run `facestream stack up`"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        kafka, controller, redis_port = free_ports(3)
        self.config = stack.StackConfig(
            root=root,
            kafka_port=kafka,
            controller_port=controller,
            redis_port=redis_port,
            partitions=PARTITIONS,
            kafka_heap="256m",
            redis_appendonly=True,
        )
        self.config.kafka_dir.mkdir(parents=True, exist_ok=True)
        self.config.lib_dir.symlink_to(shared.lib_dir, target_is_directory=True)

    def up(self) -> None:
        stack.up(create_topics=False, timeout=READY_SECONDS, config=self.config)

    def down(self) -> None:
        stack.down(config=self.config)

    def settings(self, tag: str) -> PipelineSettings:
        """Settings on this stack with topics, groups and Redis keys of their own (created)."""
        stack.ensure_topics(PARTITIONS, prefix=f"{tag}.", config=self.config)
        return PipelineSettings(
            kafka_bootstrap=self.config.bootstrap_servers,
            redis_url=self.config.redis_url,
            metrics_port=0,
            topic_prefix=f"{tag}.",
            group_prefix=tag,
            redis_prefix=tag,
        )

    def restart_kafka(self) -> float:
        """Stop the broker (SIGTERM: a controlled shutdown, as in a rolling restart), start it
        again and wait until it answers; returns the seconds it was away."""
        cfg = self.config
        marker = kafka_broker.marker(cfg)
        pid = managed_pid(cfg.kafka_pid_file, marker)
        assert pid is not None, "the private broker is not running"
        started = time.monotonic()
        terminate(pid, marker, "kafka", timeout=30.0)
        assert not pid_alive(pid, marker), "the private broker did not stop"
        kafka_broker.start(cfg)
        self._wait(lambda: kafka_broker.topic_partitions(cfg, timeout=2.0) is not None, "Kafka")
        return time.monotonic() - started

    def kill_redis(self) -> None:
        """SIGKILL the redis-server (a process crash: what it acknowledged is in its AOF)."""
        pid = managed_pid(self.config.redis_pid_file, redis_server.MARKER)
        assert pid is not None, "the private Redis is not running"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while pid_alive(pid, redis_server.MARKER):
            assert time.monotonic() < deadline, "redis-server survived SIGKILL"
            time.sleep(0.05)

    def start_redis(self) -> None:
        """Start the redis-server again (it reloads its append-only file) and wait for PING."""
        redis_server.start(self.config)
        self._wait(lambda: redis_server.ping(self.config), "Redis")

    @staticmethod
    def _wait(ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while not ready():
            assert time.monotonic() < deadline, f"{what} did not come back in {READY_SECONDS}s"
            time.sleep(0.2)
