"""The stack's Redis on 127.0.0.1: daemonized with its own pid file and no persistence (an
append-only file with ``StackConfig.redis_appendonly``).

A Redis that already answers PING on the port is used as it is and never stopped by ``down``.
"""

from __future__ import annotations

import contextlib
import logging
import time

from facestream.devstack.config import HOST, StackConfig, StackError, write_atomic
from facestream.devstack.install import ensure_redis_server
from facestream.devstack.process import managed_pid, port_open, run_logged, tail
from facestream.runtime.redis_clients import redis_client, stack_redis

log = logging.getLogger(__name__)

MARKER = "redis-server"
"""What identifies a Redis server's command line (see :func:`~.process.pid_alive`)."""


def ping(cfg: StackConfig, timeout: float = 1.0) -> bool:
    """True if a Redis answers PING on the stack's port within ``timeout`` seconds."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # A closed port is the common "not running" case: answer it without redis-py's retries,
    # which add seconds of backoff to every refused connection.
    if not port_open(cfg.redis_port, timeout=min(timeout, 0.5)):
        return False
    client = redis_client(
        stack_redis(cfg.redis_url),
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_conf(cfg: StackConfig) -> None:
    write_atomic(
        cfg.redis_conf,
        "\n".join(
            [
                "# Written by facestream.devstack on every start; edits are overwritten.",
                f"bind {HOST}",
                f"port {cfg.redis_port}",
                "protected-mode yes",
                "daemonize yes",
                "supervised no",
                f"pidfile {_quote(str(cfg.redis_pid_file))}",
                f"logfile {_quote(str(cfg.redis_log))}",
                f"dir {_quote(str(cfg.redis_dir))}",
                # A dev/test cache: nothing to keep across restarts, and no fork for RDB saves
                # (unless asked: then an append-only file, as deployments have).
                'save ""',
                f"appendonly {'yes' if cfg.redis_appendonly else 'no'}",
                "",
            ]
        ),
    )


def start(cfg: StackConfig) -> int | None:
    """Make sure a Redis answers; return the pid if this stack started (or owns) it."""
    pid = managed_pid(cfg.redis_pid_file, MARKER)
    if pid is not None:
        log.info("redis already running (pid %d)", pid)
        return pid
    if ping(cfg):
        log.info("using the Redis already answering on %s:%d", HOST, cfg.redis_port)
        return None
    if port_open(cfg.redis_port):
        raise StackError(
            f"port {cfg.redis_port} is taken by something that does not answer Redis PING; "
            "free it or set FACESTREAM_REDIS_PORT"
        )
    binary = ensure_redis_server(cfg)
    # apt's post-install may have started a system Redis on the default port (on machines
    # whose policy allows service starts): if so, use that one rather than fight over the port.
    if ping(cfg):
        log.info("using the Redis that the install started on %s:%d", HOST, cfg.redis_port)
        return None
    cfg.redis_dir.mkdir(parents=True, exist_ok=True)
    _write_conf(cfg)
    with contextlib.suppress(OSError):
        cfg.redis_pid_file.unlink()
    log.info("starting redis-server on %s:%d", HOST, cfg.redis_port)
    run_logged([binary, str(cfg.redis_conf)], cfg.redis_dir / "start.log", 30, "redis-server")
    # daemonize=yes: the parent exits at once and the daemon writes its pid file shortly after.
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        pid = managed_pid(cfg.redis_pid_file, MARKER)
        if pid is not None:
            return pid
        time.sleep(0.1)
    raise StackError(
        f"redis-server did not start; last lines of {cfg.redis_log}:\n{tail(cfg.redis_log)}"
    )
