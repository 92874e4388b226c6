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
        self.owed: list[tuple[int, bytes | None]] = []
        self.drained: list[object] = []

    def handle(self, record: KafkaRecord) -> Sequence[Output]:
        self.owed.append((record.partition, record.value))
        return []

    def drain(self, partitions: Sequence[TopicPartition] | None) -> Sequence[Output]:
        self.drained.append(None if partitions is None else sorted(p.partition for p in partitions))
        wanted = None if partitions is None else {p.partition for p in partitions}
        owed = [v for p, v in self.owed if wanted is None or p in wanted]
        self.owed = [(p, v) for p, v in self.owed if wanted is not None and p not in wanted]
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
    assert handler.drained[0] is None and handler.owed == []
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


class Waiting(Handler):
    """Holds every record back (as the matcher holds faces for their capture order) until
    ``release`` is set; then :meth:`due` lets them all go."""

    stage = "test"

    def __init__(self, out: str) -> None:
        self.out = out
        self.waiting: list[KafkaRecord] = []
        self.saved: list[KafkaRecord] = []
        self.release = False
        self.seen: list[int] = []

    def handle(self, record: KafkaRecord) -> Sequence[Output]:
        self.waiting.append(record)
        self.seen.append(record.offset)
        return []

    def held(self) -> dict[int, int]:
        first: dict[int, int] = {}
        for r in self.waiting:
            first[r.partition] = min(first.get(r.partition, r.offset), r.offset)
        return first

    def due(self) -> Sequence[Output]:
        if not self.release or not self.waiting:
            return []
        out = [Output(self.out, r.value, key=r.key) for r in self.waiting]
        self.waiting = []
        return out

    def before_commit(self) -> None:
        self.saved = list(self.waiting)

    def rewind(self) -> None:
        self.waiting = list(self.saved)


def _committed(runner: Runner, pipeline: PipelineSettings, partition: int) -> int | None:
    offset = runner.consumer.committed(TopicPartition(pipeline.topics.frames, partition))
    return None if offset is None else int(offset)


def test_records_held_back_are_not_committed_until_released(
    pipeline: PipelineSettings,
) -> None:
    """The runner commits no further than the first record a handler holds, does not stop
    for idleness while it holds any, and sends and commits what ``due`` releases without a
    record to handle. A runner that stops while records are held leaves them to be read again."""
    values = [f"w{i}".encode() for i in range(5)]
    _publish(pipeline, values)
    group = pipeline.group("waiting")

    first = Waiting(pipeline.topics.encodings)
    runner = Runner(first, kafka=pipeline, topic=pipeline.topics.frames, group=group)
    try:
        for _ in range(40):  # bounded: polls until every record is handled, then a few more
            runner._process(runner._poll())
            if len(first.seen) == len(values):
                break
        assert len(first.seen) == len(values) and first.held()
        part = first.waiting[0].partition
        assert _committed(runner, pipeline, part) in (None, 0)  # everything is held: nothing moves
    finally:
        runner.close()
    assert read_topic(pipeline, pipeline.topics.encodings) == []

    # The next owner reads them all again; released by due(), they go out and are committed.
    second = Waiting(pipeline.topics.encodings)
    runner = Runner(second, kafka=pipeline, topic=pipeline.topics.frames, group=group)
    try:
        for _ in range(40):
            runner._process(runner._poll())
            if len(second.seen) == len(values):
                break
        assert second.seen == first.seen  # all read again
        second.release = True
        assert runner._process([])  # no record: what due() released
        assert second.held() == {}
        assert _committed(runner, pipeline, part) == len(values)
    finally:
        runner.close()
    assert [r.value for r in read_topic(pipeline, pipeline.topics.encodings)] == values
