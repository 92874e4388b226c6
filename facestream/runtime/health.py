"""Liveness and readiness that the work loop reports, served with /metrics on one port.

``/healthz`` (live): the poll loop has run within ``liveness_seconds``. The runner beats once
per poll and once per record handled, so a handler stuck on a record, a broker call that never
returns or a dead loop thread all fail it, while the server thread itself keeps answering.
Before the loop first runs (models loading, members being read) it fails too: that is the
start-up probe's time, bounded by its own threshold.

``/readyz`` (ready): live, which implies the handler is built (models loaded, members read:
the loop starts after), partitions assigned, and the stage's own conditions
(:meth:`Handler.readiness <facestream.runtime.runner.Handler.readiness>`: the matcher's shards
built). Both answer JSON naming each check, 200 when all pass and 503 otherwise.

Why the metrics port, not a port of its own: one port per worker to declare, to open in the
NetworkPolicy and to point probes and scrapes at. What makes health meaningful is where its
answer comes from (the loop's heartbeat), not which thread serves it.
"""

from __future__ import annotations

import json
import logging
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

log = logging.getLogger(__name__)

LIVE_PATH: Final = "/healthz"
READY_PATH: Final = "/readyz"

Check = Callable[[], bool]
"""A readiness condition, called from the server's thread: reads flags, does no work."""
CheckSource = Callable[[], Mapping[str, bool]]
"""Several conditions by name (same rules as :data:`Check`)."""


@dataclass(frozen=True)
class Report:
    """One answer of /healthz or /readyz: each check by name, and whether all passed."""

    checks: Mapping[str, bool]
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())

    def as_dict(self) -> dict[str, Any]:
        failing = sorted(name for name, passed in self.checks.items() if not passed)
        return {
            "status": "ok" if self.ok else "failing",
            "failing": failing,
            "checks": dict(self.checks),
            **self.details,
        }


class Health:
    """What the loop reports (heartbeats) and what a stage needs to be ready (checks).

    Written by the worker's thread, read by the server's: every field is replaced whole, never
    mutated, so a reader sees either the old value or the new one."""

    def __init__(self, liveness_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.liveness_seconds = liveness_seconds
        self._clock = clock
        self._last_beat: float | None = None
        self._sources: tuple[tuple[str, CheckSource], ...] = ()

    def beat(self) -> None:
        """The work loop made progress (a poll returned, a record was handled)."""
        self._last_beat = self._clock()

    def require(self, name: str, check: Check) -> None:
        """Add the readiness condition ``name``."""
        self.require_each(name, lambda: {name: check()})

    def require_each(self, name: str, source: CheckSource) -> None:
        """Add the conditions ``source`` names when called (a stage's own, see
        :meth:`Handler.readiness <facestream.runtime.runner.Handler.readiness>`); should it
        raise, ``name`` is reported failing."""
        self._sources = (*self._sources, (name, source))

    def liveness(self) -> Report:
        last = self._last_beat
        age = None if last is None else round(self._clock() - last, 3)
        live = age is not None and age <= self.liveness_seconds
        details: dict[str, Any] = {
            "last_poll_seconds_ago": age,
            "liveness_seconds": self.liveness_seconds,
        }
        if last is None:
            details["state"] = "starting: the poll loop has not run yet"
        return Report({"loop": live}, details)

    def readiness(self) -> Report:
        live = self.liveness()
        checks = dict(live.checks)
        for name, source in self._sources:
            try:
                checks.update({key: bool(passed) for key, passed in source().items()})
            except Exception:  # a check must never take the server down; it just fails
                log.debug("readiness check %s raised", name, exc_info=True)
                checks[name] = False
        return Report(checks, live.details)


def health_app(health: Health) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: /healthz and /readyz from ``health``, everything else prometheus_client's
    (/metrics, with its content negotiation and compression)."""
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in (LIVE_PATH, READY_PATH):
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        report = health.liveness() if path == LIVE_PATH else health.readiness()
        body = json.dumps(report.as_dict()).encode()
        status = "200 OK" if report.ok else "503 Service Unavailable"
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        start_response(status, headers)
        return [body]

    return app


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log; failures show in the JSON instead."""


def serve_health(port: int, health: Health, host: str = "") -> WSGIServer | None:
    """Serve /metrics, /healthz and /readyz on ``port`` from a daemon thread (0: not at all).

    Returns the server (``server_port`` is the port bound) so tests can shut it down."""
    if not port:
        return None
    server = make_server(
        host, port, health_app(health), server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="health-http", daemon=True)
    thread.start()
    log.info("metrics and health on :%d (/metrics, %s, %s)", port, LIVE_PATH, READY_PATH)
    return server
