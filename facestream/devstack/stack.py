"""The local stack's lifecycle: :func:`up`, :func:`down`, :func:`status`, :func:`wait_ready`.

``up`` installs what is missing on first use (:mod:`.install`), starts Redis
(:mod:`.redis_server`) and a one-node Kafka (:mod:`.kafka_broker`), waits until both answer and
creates the pipeline's topics (:mod:`.topics`). ``down`` stops only the processes this stack
started (it knows them by pid file), so a Kafka or Redis that someone else runs on the same
ports is used but never stopped. Where the stack lives and its ports: :mod:`.config`.
The command line is ``facestream stack up|down|status`` (:mod:`facestream.cli.stack`).

This module is the stack's face to the rest of the code (tests, tools, benchmarks, CLI): what
they need from the other modules is exported here too (``__all__``), so that
``from facestream.devstack import stack`` is the one import they make.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from facestream.devstack import kafka_broker, redis_server
from facestream.devstack.config import (
    StackConfig,
    StackError,
    kafka_bootstrap,
    redis_url,
    resolve,
)
from facestream.devstack.install import (
    KAFKA_VERSION,
    find_redis_server,
    install_kafka,
    kafka_installed,
)
from facestream.devstack.process import (
    forget,
    locked,
    managed_pid,
    pid_alive,
    port_open,
    tail,
    tail_last_run,
    terminate,
)
from facestream.devstack.topics import ensure_topics
from facestream.runtime.topics import topic_specs

__all__ = [
    "KAFKA_VERSION",
    "StackConfig",
    "StackError",
    "down",
    "ensure_topics",
    "kafka_bootstrap",
    "redis_url",
    "status",
    "up",
    "wait_ready",
]

log = logging.getLogger(__name__)


def _wait(cfg: StackConfig, timeout: float, kafka_pid: int | None) -> tuple[bool, bool]:
    """Poll both services until ready or ``timeout``; stop early if our broker process died."""
    deadline = time.monotonic() + timeout
    kafka_ok = redis_ok = False
    while True:
        remaining = deadline - time.monotonic()
        step = min(5.0, max(remaining, 0.5))
        if not redis_ok:
            redis_ok = redis_server.ping(cfg, timeout=min(step, 1.0))
        if not kafka_ok:
            kafka_ok = kafka_broker.topic_partitions(cfg, timeout=step) is not None
        if kafka_ok and redis_ok:
            return True, True
        if (
            kafka_pid is not None
            and not kafka_ok
            and not pid_alive(kafka_pid, kafka_broker.marker(cfg))
        ):
            raise StackError(
                f"Kafka exited during start-up; its output:\n"
                f"{tail_last_run(cfg.kafka_stdout)}\nlast lines of "
                f"{cfg.kafka_server_log}:\n{tail(cfg.kafka_server_log)}"
            )
        if time.monotonic() >= deadline:
            return kafka_ok, redis_ok
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0.0)))


def wait_ready(timeout: float = 60.0, *, config: StackConfig | None = None) -> bool:
    """True once Kafka answers a metadata request and Redis answers PING; False after timeout."""
    kafka_ok, redis_ok = _wait(resolve(config), timeout, None)
    return kafka_ok and redis_ok


def up(
    create_topics: bool = True,
    timeout: float = 120.0,
    *,
    partitions: int | None = None,
    config: StackConfig | None = None,
) -> dict[str, Any]:
    """Install what is missing, start Kafka and Redis, create the topics; return :func:`status`.

    Harmless when the stack already runs. ``timeout`` bounds the wait for readiness (installs
    have their own, longer limits). Raises :class:`StackError` with the reason on failure.
    """
    cfg = resolve(config)
    with locked(cfg):
        started = time.monotonic()
        # Fetch Kafka's jars before anything is started, so a failing download leaves nothing
        # running behind it; not needed when a broker already answers on the port.
        if managed_pid(cfg.kafka_pid_file, kafka_broker.marker(cfg)) is None and not port_open(
            cfg.kafka_port
        ):
            install_kafka(cfg)
        redis_server.start(cfg)
        kafka_pid = kafka_broker.start(cfg)
        kafka_ok, redis_ok = _wait(cfg, timeout, kafka_pid)
        if not redis_ok:
            raise StackError(
                f"Redis did not answer PING within {timeout:.0f}s; see {cfg.redis_log}"
            )
        if not kafka_ok:
            raise StackError(
                f"Kafka was not ready within {timeout:.0f}s; last lines of "
                f"{cfg.kafka_server_log}:\n{tail(cfg.kafka_server_log)}"
            )
        log.info("stack up and ready %.1fs after `up` began", time.monotonic() - started)
        if create_topics:
            ensure_topics(partitions, timeout=max(timeout, 10.0), config=cfg)
    return status(config=cfg)


def down(timeout: float = 30.0, *, config: StackConfig | None = None) -> list[str]:
    """Stop the Kafka and Redis that this stack started; return the names of those stopped.

    Each gets SIGTERM, up to ``timeout`` seconds to exit, then SIGKILL. Services that answer on
    the ports but were not started by this stack are left running.
    """
    cfg = resolve(config)
    stopped: list[str] = []
    with locked(cfg):
        # Kafka first: it is the slower one, and nothing it does on shutdown needs Redis.
        for name, pid_file, marker in (
            ("kafka", cfg.kafka_pid_file, kafka_broker.marker(cfg)),
            ("redis", cfg.redis_pid_file, redis_server.MARKER),
        ):
            pid = managed_pid(pid_file, marker)
            if pid is None:
                log.info("%s: not started by this stack, nothing to stop", name)
                continue
            terminate(pid, marker, name, timeout)
            if pid_alive(pid, marker):
                raise StackError(f"{name} (pid {pid}) is still running after SIGKILL")
            with contextlib.suppress(OSError):
                pid_file.unlink()
            forget(pid)
            stopped.append(name)
    return stopped


def status(*, config: StackConfig | None = None) -> dict[str, Any]:
    """What runs and answers now, as a JSON-serializable dict (cheap; starts nothing).

    Keys: ``ready`` (both answer), ``stack_dir``, ``kafka``, ``redis`` (each with ``ready``,
    ``managed`` = started by this stack, ``pid``, ``listening``, endpoints and log paths) and
    ``topics`` (name -> partitions of the pipeline topics present) and ``missing_topics``.
    """
    cfg = resolve(config)
    kafka_pid = managed_pid(cfg.kafka_pid_file, kafka_broker.marker(cfg))
    redis_pid = managed_pid(cfg.redis_pid_file, redis_server.MARKER)
    existing = kafka_broker.topic_partitions(cfg, timeout=3.0)
    redis_ok = redis_server.ping(cfg)
    wanted = [spec.name for spec in topic_specs(cfg.partitions)]
    present = existing or {}
    return {
        "ready": existing is not None and redis_ok,
        "stack_dir": str(cfg.root),
        "kafka": {
            "version": KAFKA_VERSION,
            "installed": kafka_installed(cfg),
            "bootstrap_servers": cfg.bootstrap_servers,
            "controller_port": cfg.controller_port,
            "listening": port_open(cfg.kafka_port),
            "ready": existing is not None,
            "managed": kafka_pid is not None,
            "pid": kafka_pid,
            "log": str(cfg.kafka_server_log),
        },
        "redis": {
            "url": cfg.redis_url,
            "binary": find_redis_server(),
            "listening": port_open(cfg.redis_port),
            "ready": redis_ok,
            "managed": redis_pid is not None,
            "pid": redis_pid,
            "log": str(cfg.redis_log),
        },
        "topics": {name: present[name] for name in wanted if name in present},
        "missing_topics": [name for name in wanted if name not in present] if existing else [],
    }
