"""Throwaway Redis servers of one's own on 127.0.0.1: a Redis Cluster of a few primaries, or a
single node, in a directory of the caller's (tests, benchmarks).

:func:`local_redis` starts Debian's ``redis-server`` processes on free ports (in the foreground,
children of this process, no persistence), with ``cluster`` joins them with ``redis-cli
--cluster create`` and waits until every node reports ``cluster_state:ok``, and stops them all
on the way out. Every wait is bounded. The stack's own Redis (:mod:`.redis_server`) is not
touched.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import redis

from facestream.devstack.config import HOST, StackError
from facestream.devstack.install import find_redis_server
from facestream.runtime import redis_clients

BUS_OFFSET: Final = 10_000
"""A cluster node also listens on its port + 10000 (the cluster bus)."""


@dataclass
class LocalRedis:
    """Running servers: ``url`` is the first node's (a cluster client finds the others)."""

    root: Path
    ports: list[int]
    cluster: bool
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.ports[0]}/0"

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (``CLUSTER INFO``, ``INFO memory``...)."""
        settings = redis_clients.stack_redis(f"redis://{HOST}:{port}/0")
        return redis_clients.redis_client(settings, socket_timeout=5, decode_responses=True)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every server, then wait (bounded); kill what has not stopped."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, bus: bool) -> list[int]:
    """``count`` ports free on 127.0.0.1 (with their cluster bus port when ``bus``)."""
    rng = random.Random()
    ports: list[int] = []
    for _ in range(2000):
        port = rng.randrange(20_000, 40_000)
        if port in ports or (bus and port + BUS_OFFSET in ports):
            continue
        if _free(port) and (not bus or _free(port + BUS_OFFSET)):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise StackError(f"found no {count} free ports on {HOST}")


def _wait(what: str, ready: Callable[[], object], timeout: float, servers: LocalRedis) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in servers.processes:
            if proc.poll() is not None:
                raise StackError(f"a redis-server exited while waiting for {what}: {servers.root}")
        with contextlib.suppress(redis.RedisError, OSError):
            if ready():
                return
        time.sleep(0.1)
    raise StackError(f"{what} not within {timeout:.0f}s (logs in {servers.root})")


def _state(info: object) -> str | None:
    """``cluster_state`` of a ``CLUSTER INFO`` reply, parsed by redis-py or not."""
    if isinstance(info, dict):
        return str(info.get("cluster_state"))
    for line in str(info).splitlines():
        if line.startswith("cluster_state:"):
            return line.split(":", 1)[1].strip()
    return None


def start(root: Path, *, nodes: int = 3, cluster: bool = True, timeout: float = 30.0) -> LocalRedis:
    """Start ``nodes`` servers under ``root`` (one directory each) and, with ``cluster``, make
    them one Redis Cluster of ``nodes`` primaries without replicas. StackError when
    ``redis-server`` is missing or anything does not come up within ``timeout`` seconds."""
    binary = find_redis_server()
    cli = shutil.which("redis-cli") or (str(Path(binary).with_name("redis-cli")) if binary else "")
    if binary is None or not Path(cli).exists():
        raise StackError("redis-server and redis-cli are needed: apt-get install redis-server")
    servers = LocalRedis(root, free_ports(nodes, bus=cluster), cluster)
    try:
        for port in servers.ports:
            home = root / str(port)
            home.mkdir(parents=True, exist_ok=True)
            args = [binary, "--port", str(port), "--bind", HOST, "--dir", str(home)]
            args += ["--save", "", "--appendonly", "no", "--protected-mode", "yes"]
            args += ["--logfile", str(home / "redis.log")]
            if cluster:
                args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
                args += ["--cluster-node-timeout", "5000"]
            servers.processes.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for port in servers.ports:
            _wait(f"PING on {port}", servers.node(port).ping, timeout, servers)
        if cluster:
            addresses = [f"{HOST}:{p}" for p in servers.ports]
            created = subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *addresses,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if created.returncode != 0:
                raise StackError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}")

            def ok() -> bool:
                commands: list[Callable[..., object]] = [
                    servers.node(p).execute_command for p in servers.ports
                ]
                return all(_state(command("CLUSTER INFO")) == "ok" for command in commands)

            _wait("cluster_state:ok", ok, timeout, servers)
    except BaseException:
        servers.stop()
        raise
    return servers


@contextlib.contextmanager
def local_redis(
    root: Path, *, nodes: int = 3, cluster: bool = True, timeout: float = 30.0
) -> Iterator[LocalRedis]:
    """:func:`start`, yield the servers, stop them (also when the body fails)."""
    servers = start(root, nodes=nodes, cluster=cluster, timeout=timeout)
    try:
        yield servers
    finally:
        servers.stop()
