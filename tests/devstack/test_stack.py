"""Round trips through the real local stack (Kafka + Redis) started by ``facestream stack up``.

Start it first with ``facestream stack up``. Without a running stack these tests are
skipped, except under CI (``$CI`` set), where a missing stack is a failure: CI must start it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from facestream.devstack import stack
from facestream.devstack.process import port_open
from facestream.runtime.topics import Topics


@pytest.fixture(scope="session")
def live_stack() -> stack.StackConfig:
    """The stack's config, once both Kafka and Redis answer; skip (or fail in CI) otherwise."""
    cfg = stack.StackConfig.from_env()
    in_ci = bool(os.environ.get("CI"))
    # Wait only for a stack that may still be starting (CI starts it just before pytest, or a
    # port already listens); with nothing there locally, skip at once instead of sleeping.
    starting = port_open(cfg.kafka_port) or port_open(cfg.redis_port)
    timeout = 30.0 if in_ci else (10.0 if starting else 0.0)
    if stack.wait_ready(timeout=timeout, config=cfg):
        return cfg
    st = stack.status(config=cfg)
    message = (
        f"local stack not running (kafka ready={st['kafka']['ready']} at "
        f"{cfg.bootstrap_servers}, redis ready={st['redis']['ready']} at {cfg.redis_url}); "
        "start it with `facestream stack up`"
    )
    if in_ci:
        pytest.fail(message + " — CI is set, so the stack must be up", pytrace=False)
    pytest.skip(message)


@pytest.fixture()
def fresh_topic(live_stack: stack.StackConfig) -> Iterator[str]:
    """A uniquely named one-partition topic, deleted afterwards."""
    from kafka.admin import KafkaAdminClient, NewTopic

    name = f"facestream-test-{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(
        bootstrap_servers=live_stack.bootstrap_servers, client_id="facestream-test-stack"
    )
    try:
        admin.create_topics([NewTopic(name=name, num_partitions=1, replication_factor=1)])
        yield name
    finally:
        try:
            admin.delete_topics([name])
        finally:
            admin.close()


def test_pipeline_topics_exist(live_stack: stack.StackConfig) -> None:
    st = stack.status(config=live_stack)
    assert st["ready"]
    assert st["missing_topics"] == []
    topics = Topics()
    assert st["topics"][topics.identities] == st["topics"][topics.encodings]
    assert st["topics"][topics.members] == 1


def test_kafka_produce_consume_round_trip(live_stack: stack.StackConfig, fresh_topic: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    key, value = b"store-7", f"hello {uuid.uuid4()}".encode()
    producer = KafkaProducer(bootstrap_servers=live_stack.bootstrap_servers, acks="all")
    try:
        meta = producer.send(fresh_topic, key=key, value=value, headers=[("frame_id", b"f-1")]).get(
            timeout=30
        )
    finally:
        producer.close()
    assert meta.partition == 0

    # Manual assignment, no group: no rebalance to wait for, and nothing left behind.
    consumer = KafkaConsumer(
        bootstrap_servers=live_stack.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        tp = TopicPartition(fresh_topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        records: list[Any] = []
        deadline = time.monotonic() + 30.0
        while not records and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
    finally:
        consumer.close()
    assert len(records) == 1, "the message produced was not consumed within 30 s"
    assert records[0].key == key
    assert records[0].value == value
    assert list(records[0].headers) == [("frame_id", b"f-1")]


def test_redis_set_get(live_stack: stack.StackConfig) -> None:
    import redis

    client = redis.Redis.from_url(live_stack.redis_url)
    key = f"facestream:test:{uuid.uuid4().hex}"
    try:
        assert client.set(key, b"value-1", ex=60)
        assert client.get(key) == b"value-1"
    finally:
        client.delete(key)
        client.close()
