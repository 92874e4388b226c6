"""Transient faults are waited out, never dead-lettered (issue 8): on the real broker, with a
handler that fails for a while, and with the real sink whose own Redis server goes away."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from kafka import KafkaProducer

from facestream.runtime.health import Health
from facestream.runtime.runner import Backoff, Handler, KafkaRecord, Output, Poison, Runner
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import Box, MatchEvent, derived_id
from facestream.services.sink.settings import SinkSettings
from facestream.services.sink.store import Applier
from facestream.services.sink.worker import SinkHandler
from tests.kafka_fixtures import read_topic

FAST = Backoff(first=0.05, cap=0.4)


def send(settings: PipelineSettings, topic: str, values: Sequence[bytes], key: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        for f in [producer.send(topic, key=key, value=v) for v in values]:
            f.get(timeout=20)
    finally:
        producer.close(timeout=10)


class Flaky(Handler):
    """Echoes each record to ``out``; fails ``failures`` times on each record first, with
    ``error``; raises Poison for the value ``b"poison"``."""

    stage = "flaky"

    def __init__(self, out: str, failures: int, error: type[Exception]) -> None:
        self.out, self.failures, self.error = out, failures, error
        self.calls: dict[bytes, int] = {}
        self.live_while_failing: list[bool] = []
        self.health: Health | None = None

    def handle(self, record: KafkaRecord) -> Sequence[Output]:
        value = record.value or b""
        if value == b"poison":
            raise Poison("invalid", "a poison record")
        self.calls[value] = self.calls.get(value, 0) + 1
        if self.calls[value] <= self.failures:
            if self.health is not None:
                self.live_while_failing.append(self.health.liveness().ok)
            raise self.error("the dependency is away")
        return [Output(self.out, value, record.key)]


def run_until_idle(runner: Runner, seconds: float = 2.0, timeout: float = 60.0) -> None:
    worker = threading.Thread(target=runner.run, kwargs={"max_idle_seconds": seconds})
    worker.start()
    worker.join(timeout=timeout)
    assert not worker.is_alive(), "the runner did not go idle"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("error", [RuntimeError, redis.ConnectionError, TimeoutError])
def test_a_handler_failing_for_a_while_loses_nothing_and_dead_letters_nothing(
    pipeline: PipelineSettings, error: type[Exception]
) -> None:
    topics = pipeline.topics
    values = [f"r{i}".encode() for i in range(5)]
    send(pipeline, topics.frames, [values[0], values[1], b"poison", *values[2:]], b"s1")
    health = Health(liveness_seconds=1.0)
    handler = Flaky(topics.encodings, failures=4, error=error)
    handler.health = health
    runner = Runner(
        handler,
        kafka=pipeline,
        topic=topics.frames,
        group=pipeline.group("flaky"),
        backoff=FAST,
        health=health,
    )
    run_until_idle(runner)

    outputs = [r.value for r in read_topic(pipeline, topics.encodings)]
    assert outputs == values  # each once, in order
    assert all(handler.calls[v] == 5 for v in values)
    assert handler.live_while_failing and all(handler.live_while_failing)
    letters = read_topic(pipeline, topics.dlq(topics.frames))
    assert len(letters) == 1  # only the poison record
    assert b'"reason":"invalid"' in letters[0].value


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first=0.2, cap=30.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, 1.6]
    assert backoff.delay(9) == 30.0 and backoff.delay(10_000) == 30.0


@pytest.mark.timeout(60)
def test_a_stop_while_backing_off_commits_nothing_and_the_next_run_handles_it(
    pipeline: PipelineSettings,
) -> None:
    topics = pipeline.topics
    send(pipeline, topics.frames, [b"only"], b"s1")
    group = pipeline.group("flaky")
    stuck = Flaky(topics.encodings, failures=10_000, error=ConnectionError)
    runner = Runner(stuck, kafka=pipeline, topic=topics.frames, group=group, backoff=FAST)
    worker = threading.Thread(target=runner.run)
    worker.start()
    deadline = time.monotonic() + 30
    while stuck.calls.get(b"only", 0) < 3:
        assert time.monotonic() < deadline, "the record was never tried"
        time.sleep(0.1)
    runner.stop()
    worker.join(timeout=20)
    assert not worker.is_alive()

    recovered = Flaky(topics.encodings, failures=0, error=ConnectionError)
    run_until_idle(Runner(recovered, kafka=pipeline, topic=topics.frames, group=group))
    assert [r.value for r in read_topic(pipeline, topics.encodings)] == [b"only"]
    assert read_topic(pipeline, topics.dlq(topics.frames)) == []


# -- the real sink, its Redis server stopped and started again ----------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of this test's own (the stack's shared one is never restarted)."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def event(i: int) -> MatchEvent:
    return MatchEvent(
        event_id=derived_id("transient", str(i)),
        kind="new",
        face_id=derived_id("face", str(i)),
        store_id="s1",
        camera_id="c1",
        captured_at=datetime(2026, 11, 29, 10, 0, tzinfo=UTC) + timedelta(minutes=i),
        frame_id=f"f{i}",
        observation_id=f"f{i}:0",
        box=Box(top=0, right=10, bottom=10, left=0),
        model_version="m",
    )


@pytest.mark.timeout(120)
def test_the_sink_waits_for_its_redis_and_dead_letters_nothing(
    pipeline: PipelineSettings, own_redis: RedisServer
) -> None:
    topics = pipeline.topics
    client = redis.Redis.from_url(own_redis.url)
    handler = SinkHandler(Applier(client, pipeline.redis_prefix), SinkSettings())
    runner = Runner(
        handler,
        kafka=pipeline,
        topic=topics.matches,
        group=pipeline.group("sink"),
        backoff=Backoff(first=0.2, cap=1.0),
    )
    worker = threading.Thread(target=runner.run)
    worker.start()
    try:
        send(pipeline, topics.matches, [event(i).to_bytes() for i in range(3)], b"s1")
        applied = f"{pipeline.redis_prefix}:{{s1}}:recent"  # the event ids the sink applied
        deadline = time.monotonic() + 30
        while client.zcard(applied) < 3:
            assert time.monotonic() < deadline, "the first events were not applied"
            time.sleep(0.2)
        own_redis.stop()  # Redis away while events keep coming
        send(pipeline, topics.matches, [event(i).to_bytes() for i in range(3, 10)], b"s1")
        time.sleep(4)  # several failed attempts
        assert worker.is_alive()
        own_redis.start()  # AOF: what was applied before is still there
        deadline = time.monotonic() + 30
        while client.zcard(applied) < 10:
            assert time.monotonic() < deadline, "the events sent during the outage were lost"
            time.sleep(0.2)
    finally:
        runner.stop()
        worker.join(timeout=30)
    day = client.hgetall(f"{pipeline.redis_prefix}:{{s1}}:day:2026-11-29")
    assert int(day[b"pv"]) == 10
    assert read_topic(pipeline, topics.dlq(topics.matches)) == []
