"""Fixtures for tests on the real broker and Redis: each test gets topics of its own.

The stack is started by `make test` (`facestream stack up`). Without it these tests skip
locally and fail under CI, where a missing broker is a broken set-up, not a reason to skip.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from facestream.devstack import stack
from facestream.devstack.kafka_broker import admin_client
from facestream.runtime.settings import PipelineSettings
from facestream.runtime.topics import Topics
from facestream.schemas import CameraProgress
from facestream.schemas.keys import is_progress

PARTITIONS = 4


@pytest.fixture(scope="session")
def live_stack() -> PipelineSettings:
    """Settings pointing at the running local Kafka and Redis."""
    cfg = stack.StackConfig.from_env()
    if not stack.wait_ready(5.0, config=cfg):
        message = "Kafka/Redis not running: start them with `facestream stack up`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return PipelineSettings(
        kafka_bootstrap=stack.kafka_bootstrap(cfg), redis_url=stack.redis_url(cfg), metrics_port=0
    )


@pytest.fixture
def pipeline(live_stack: PipelineSettings) -> Iterator[PipelineSettings]:
    """Settings with a fresh topic prefix, consumer-group prefix and Redis key prefix."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    stack.ensure_topics(PARTITIONS, prefix=f"{tag}.")
    yield live_stack.model_copy(
        update={"topic_prefix": f"{tag}.", "group_prefix": tag, "redis_prefix": tag}
    )
    delete_topics(f"{tag}.")


def delete_topics(prefix: str) -> None:
    """Delete the topics named ``prefix*`` (best effort). A suite run creates a few thousand
    partitions; left behind, they pile up run after run on a developer's broker until it spends
    its time loading them (15,000 partitions made the local broker stop answering)."""
    admin = admin_client(stack.StackConfig.from_env(), 10.0)
    try:
        mine = [t for t in admin.list_topics() if t.startswith(prefix)]
        if mine:
            admin.delete_topics(mine, timeout_ms=10_000)
    except KafkaError as exc:
        logging.getLogger(__name__).warning("topics %s* not deleted: %s", prefix, exc)
    finally:
        admin.close()


@pytest.fixture
def topics(pipeline: PipelineSettings) -> Topics:
    return pipeline.topics


def pipeline_env(settings: PipelineSettings) -> dict[str, str]:
    """Environment for a worker subprocess that uses these settings."""
    return {**os.environ, **settings.to_env(), "FACESTREAM_METRICS_PORT": "0"}


def read_topic(settings: PipelineSettings, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every record now in ``topic``, partition by partition, in offset order."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in parts):
            assert time.monotonic() < deadline, f"timed out reading {topic}"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def read_observations(settings: PipelineSettings, timeout: float = 20.0) -> list[Any]:
    """The records of ``encodings.v1`` that are faces, without the detectors' camera progress."""
    records = read_topic(settings, settings.topics.encodings, timeout)
    return [r for r in records if not is_progress(r.headers)]


def read_progress(settings: PipelineSettings, timeout: float = 20.0) -> list[CameraProgress]:
    """The detectors' camera progress records in ``encodings.v1``, in offset order."""
    records = read_topic(settings, settings.topics.encodings, timeout)
    return [CameraProgress.read(r.value) for r in records if is_progress(r.headers)]


def run_detector_until_idle(settings: PipelineSettings, log: Path, idle_seconds: int = 3) -> None:
    """Run the real detector process over ``settings``' frames until its input has been idle
    for ``idle_seconds`` (it then stops as on SIGTERM); its output in ``log``."""
    with log.open("wb") as out:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "facestream.services.detector",
                "--max-idle-seconds",
                str(idle_seconds),
            ],
            env=pipeline_env(settings),
            stdout=out,
            stderr=out,
            timeout=150,
            check=False,
        )
    assert done.returncode == 0, log.read_text()
