"""/healthz and /readyz: what the work loop reports, on the real broker.

A handler that blocks fails liveness within the configured seconds and recovers when it moves
again; a matcher whose shards are being built is not ready, then is; a real worker process
answers both on its metrics port. Every wait is bounded.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import redis
from kafka import KafkaProducer

from facestream.devstack.workers import spawn_worker, stop_workers
from facestream.runtime.health import Health, serve_health
from facestream.runtime.runner import Handler, KafkaRecord, Output, Runner
from facestream.runtime.settings import PipelineSettings
from facestream.services.matcher.settings import MatcherSettings
from facestream.services.matcher.worker import MatcherHandler

WAIT = 30.0
"""Longest wait for any state change (joining a group takes a few seconds)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of ``GET path`` (503 included)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(
    port: int, path: str, predicate: Callable[[int, dict[str, Any]], bool]
) -> tuple[int, dict[str, Any]]:
    """Poll ``path`` until ``predicate(status, body)``; fail after :data:`WAIT` seconds."""
    deadline = time.monotonic() + WAIT
    last: tuple[int, dict[str, Any]] | None = None
    while time.monotonic() < deadline:
        try:
            last = get(port, path)
        except OSError:  # not listening yet
            last = None
        if last is not None and predicate(*last):
            return last
        time.sleep(0.2)
    pytest.fail(f"{path} never reached the expected state; last answer {last}")


@pytest.fixture
def served() -> Iterator[Callable[[Health], int]]:
    """Serve a :class:`Health` on a free port; shut down after the test."""
    servers = []

    def serve(health: Health) -> int:
        server = serve_health(free_port(), health, host="127.0.0.1")
        assert server is not None
        servers.append(server)
        return int(server.server_port)

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


# -- the model, without a broker ----------------------------------------------------------------


def test_liveness_is_the_age_of_the_last_beat() -> None:
    now = [100.0]
    health = Health(liveness_seconds=5, clock=lambda: now[0])
    starting = health.liveness()
    assert not starting.ok and starting.details["state"].startswith("starting")
    health.beat()
    now[0] += 5
    assert health.liveness().ok
    now[0] += 0.1
    stale = health.liveness()
    assert not stale.ok
    assert stale.as_dict()["failing"] == ["loop"]
    assert stale.as_dict()["last_poll_seconds_ago"] == pytest.approx(5.1)


def test_readiness_names_each_failing_check() -> None:
    health = Health(liveness_seconds=60)
    health.beat()
    flags = {"shards": False}

    def broken() -> dict[str, bool]:
        raise RuntimeError("a check that raises fails, it does not take the server down")

    health.require("assigned", lambda: True)
    health.require_each("handler", lambda: dict(flags))
    health.require_each("other", broken)
    body = health.readiness().as_dict()
    assert body["status"] == "failing"
    assert body["failing"] == ["other", "shards"]
    assert body["checks"] == {"loop": True, "assigned": True, "shards": False, "other": False}


def test_one_port_serves_metrics_and_both_probes(served: Callable[[Health], int]) -> None:
    health = Health(liveness_seconds=60)
    port = served(health)
    assert get(port, "/healthz")[0] == 503  # the loop has not run yet
    health.beat()
    assert get(port, "/healthz")[0] == 200
    assert get(port, "/readyz")[1]["status"] == "ok"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert b"facestream_messages_total" in response.read()


# -- the runner on the real broker --------------------------------------------------------------


class BlockingHandler(Handler):
    """Blocks in :meth:`handle` until released: a stuck loop."""

    stage = "stuck"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def handle(self, record: KafkaRecord) -> Sequence[Output]:
        self.entered.set()
        assert self.release.wait(WAIT), "never released"
        return []


def run_in_thread(runner: Runner) -> threading.Thread:
    thread = threading.Thread(target=runner.run, name="runner", daemon=True)
    thread.start()
    return thread


def stop(runner: Runner, thread: threading.Thread) -> None:
    runner.stop()
    thread.join(WAIT)
    assert not thread.is_alive(), "the runner did not stop"


def test_a_stuck_loop_fails_liveness_then_recovers(
    pipeline: PipelineSettings, served: Callable[[Health], int]
) -> None:
    topic = pipeline.topics.frames
    health = Health(liveness_seconds=1.5)
    port = served(health)
    handler = BlockingHandler()
    runner = Runner(
        handler, kafka=pipeline, topic=topic, group=pipeline.group("stuck"),
        health=health,
    )  # fmt: skip
    thread = run_in_thread(runner)
    try:
        wait_for(port, "/readyz", lambda status, _: status == 200)  # polling, assigned
        producer = KafkaProducer(bootstrap_servers=pipeline.kafka_bootstrap)
        producer.send(topic, b"frame", key=b"s1").get(timeout=10)
        producer.close()
        assert handler.entered.wait(WAIT), "the record never reached the handler"
        status, body = wait_for(port, "/healthz", lambda status, _: status == 503)
        assert body["failing"] == ["loop"] and body["last_poll_seconds_ago"] > 1.5
        status, body = get(port, "/readyz")
        assert status == 503 and "loop" in body["failing"]  # stuck is not ready either
        handler.release.set()
        wait_for(port, "/healthz", lambda status, _: status == 200)
    finally:
        handler.release.set()
        stop(runner, thread)


def clean_redis(settings: PipelineSettings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_a_matcher_building_its_shards_is_not_ready_then_is(
    pipeline: PipelineSettings, served: Callable[[Health], int]
) -> None:
    settings = MatcherSettings(matcher_id=f"t-{uuid.uuid4().hex[:6]}", startup_timeout=20)
    handler = MatcherHandler(settings, pipeline)
    handler.start()
    # Hold the shard build (what a big identities.v1 does for minutes) until released.
    building, release = threading.Event(), threading.Event()
    own = handler.shards.own

    def held_own(partitions: Any, timeout: float) -> None:
        building.set()
        assert release.wait(WAIT), "never released"
        own(partitions, timeout)

    handler.shards.own = held_own  # type: ignore[method-assign]
    health = Health(liveness_seconds=WAIT)
    port = served(health)
    runner = Runner(
        handler, kafka=pipeline, topic=pipeline.topics.encodings,
        group=pipeline.group("matcher"), health=health,
    )  # fmt: skip
    thread = run_in_thread(runner)
    try:
        assert building.wait(WAIT), "the matcher never started building its shards"
        status, body = wait_for(port, "/readyz", lambda _, body: body["checks"].get("assigned"))
        assert status == 503
        assert body["failing"] == ["shards"]
        assert get(port, "/healthz")[0] == 200  # rebuilding is work, not a stuck loop
        release.set()
        status, body = wait_for(port, "/readyz", lambda status, _: status == 200)
        assert body["checks"] == {"loop": True, "assigned": True, "shards": True}
    finally:
        release.set()
        stop(runner, thread)
        handler.close()
        clean_redis(pipeline)


# -- a real worker process ------------------------------------------------------------------------


def test_a_worker_process_serves_both_probes(pipeline: PipelineSettings) -> None:
    port = free_port()
    sink = spawn_worker("sink", pipeline, extra_env={"FACESTREAM_METRICS_PORT": str(port)})
    try:
        status, body = wait_for(port, "/readyz", lambda status, _: status == 200)
        assert body["checks"] == {"loop": True, "assigned": True}
        status, body = get(port, "/healthz")
        assert status == 200 and body["last_poll_seconds_ago"] < 5
        assert sink.poll() is None
    finally:
        stop_workers([("sink", sink)])
        clean_redis(pipeline)
