"""The runner hands a handler each poll batch whole (``Handler.prepare``) before its records one
by one, on the real broker; a failing ``prepare`` costs only its speed-up. What a handler holds
back (``Handler.drain``) is published when the worker stops."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError

from facestream.runtime.runner import (
    Backoff,
    Handler,
    KafkaRecord,
    Output,
    Runner,
    make_producer,
)
from facestream.runtime.settings import PipelineSettings
from tests.kafka_fixtures import read_topic


class Recording(Handler):
    """Echoes each record to ``out``, noting what prepare was handed before."""

    stage = "test"

    def __init__(self, out: str, fail: bool = False) -> None:
        self.out = out
        self.fail = fail
        self.batches: list[list[bytes | None]] = []
        self.handled: list[tuple[bytes | None, int]] = []
        """(value, the number of the batch prepare was last handed)"""

    def prepare(self, records: Sequence[KafkaRecord]) -> None:
        self.batches.append([r.value for r in records])
        if self.fail:
            raise RuntimeError("prepare broke")

    def handle(self, record: KafkaRecord) -> Sequence[Output]:
        self.handled.append((record.value, len(self.batches) - 1))
        return [Output(self.out, record.value, key=record.key)]


def _publish(pipeline: PipelineSettings, values: list[bytes]) -> None:
    """``values`` to the frames topic, in order, keyed alike (one partition)."""
    producer = make_producer(pipeline)
    try:
        for v in values:
            producer.send(pipeline.topics.frames, v, key=b"s1").get(timeout=20)
    finally:
        producer.close()


def _run(pipeline: PipelineSettings, handler: Recording, group: str) -> None:
    runner = Runner(handler, kafka=pipeline, topic=pipeline.topics.frames, group=group)
    try:
        runner.run(max_idle_seconds=3)
    finally:
        runner.close()


def test_each_poll_batch_is_prepared_whole_before_its_records_are_handled(
    pipeline: PipelineSettings,
) -> None:
    values = [f"r{i}".encode() for i in range(12)]
    _publish(pipeline, values)

    handler = Recording(pipeline.topics.encodings)
    _run(pipeline, handler, pipeline.group("prepared"))
    assert [v for v, _ in handler.handled] == values
    # Every record was handled after the prepare of the batch holding it, in batch order.
    assert [v for batch in handler.batches for v in batch] == values
    for value, batch in handler.handled:
        assert value in handler.batches[batch]
    assert any(len(batch) > 1 for batch in handler.batches)  # whole batches, not records

    failing = Recording(pipeline.topics.matches, fail=True)
    _run(pipeline, failing, pipeline.group("failing"))
    assert [v for v, _ in failing.handled] == values  # handled as if prepare had not run
    assert [r.value for r in read_topic(pipeline, pipeline.topics.matches)] == values


class Holding(Handler):
    """Publishes nothing while handling; owes one output per record, drained at the end (as
    the detector owes its open passes)."""

    stage = "test"

    def __init__(self, out: str) -> None:
        self.out = out
        self.held: list[tuple[int, bytes | None]] = []
        self.drained: list[object] = []

    def handle(self, record: KafkaRecord) -> Sequence[Output]:
        self.held.append((record.partition, record.value))
        return []

    def drain(self, partitions: Sequence[TopicPartition] | None) -> Sequence[Output]:
        self.drained.append(None if partitions is None else sorted(p.partition for p in partitions))
        wanted = None if partitions is None else {p.partition for p in partitions}
        owed = [v for p, v in self.held if wanted is None or p in wanted]
        self.held = [(p, v) for p, v in self.held if wanted is not None and p not in wanted]
        return [Output(self.out, v, key=b"s1") for v in owed]


def test_what_a_handler_holds_back_is_published_when_the_worker_stops(
    pipeline: PipelineSettings,
) -> None:
    values = [f"h{i}".encode() for i in range(5)]
    _publish(pipeline, values)
    handler = Holding(pipeline.topics.encodings)
    runner = Runner(
        handler, kafka=pipeline, topic=pipeline.topics.frames, group=pipeline.group("holding")
    )
    runner.run(max_idle_seconds=3)  # then closes the runner, which drains it
    # Drained at close (None); the consumer's own close may then revoke its partitions, which
    # drains again and finds nothing owed.
    assert handler.drained[0] is None and handler.held == []
    assert [r.value for r in read_topic(pipeline, pipeline.topics.encodings)] == values


def test_a_commit_the_broker_refuses_does_not_stop_the_worker(
    pipeline: PipelineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker restarted under a worker can fail its commit with a connection error (seen in
    tests/reliability/test_faults.py): the worker carries on, and whoever reads the partition
    next replays what was not committed."""
    values = [f"c{i}".encode() for i in range(6)]
    _publish(pipeline, values)
    group = pipeline.group("commit-refused")
    handler = Recording(pipeline.topics.encodings)
    runner = Runner(
        handler,
        kafka=pipeline,
        topic=pipeline.topics.frames,
        group=group,
        backoff=Backoff(first=0.01, cap=0.01),
    )
    refused: list[object] = []

    def refuse(offsets: object = None) -> None:
        refused.append(offsets)
        raise KafkaConnectionError("111 ECONNREFUSED")

    monkeypatch.setattr(runner.consumer, "commit", refuse)
    try:
        runner.run(max_idle_seconds=3)  # returns: nothing raised out of the loop
    finally:
        monkeypatch.undo()
        runner.close()
    assert [v for v, _ in handler.handled] == values and refused
    again = Recording(pipeline.topics.encodings)
    _run(pipeline, again, group)
    assert [v for v, _ in again.handled] == values  # nothing was committed: all read again
