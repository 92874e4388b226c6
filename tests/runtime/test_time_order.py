"""Records of several partitions handed over by timestamp (``facestream.runtime.timeorder``):
the rules on a scripted consumer, then the runner on the real broker."""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka import TopicPartition

from facestream.runtime import kafka_clients
from facestream.runtime.runner import Runner, make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.runtime.timeorder import TimeOrder
from tests.kafka_fixtures import read_topic
from tests.runtime.test_runner_batches import Recording

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


@dataclass(frozen=True)
class Rec:
    partition: int
    offset: int
    timestamp: int


@dataclass
class Consumer:
    """What TimeOrder asks of a KafkaConsumer: assignment, highwater, position."""

    highwater_of: dict[TopicPartition, int | None]
    position_of: dict[TopicPartition, int] = field(default_factory=dict)

    def assignment(self) -> set[TopicPartition]:
        return set(self.highwater_of)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwater_of[tp]

    def position(self, tp: TopicPartition) -> int:
        return self.position_of.get(tp, 0)


def recs(tp: TopicPartition, *timestamps: int, start: int = 0) -> list[Rec]:
    return [Rec(tp.partition, start + i, ts) for i, ts in enumerate(timestamps)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_records_go_lowest_timestamp_first_across_partitions() -> None:
    consumer = Consumer({A: 3, B: 3}, {A: 3, B: 3})  # both fully fetched
    order: TimeOrder[Rec] = TimeOrder(consumer, low_water=10)
    order.add({A: recs(A, 10, 40, 50), B: recs(B, 20, 30, 60)})
    taken = order.take(4)
    assert [r.timestamp for r in taken] == [10, 20, 30, 40]
    assert [r.timestamp for r in order.take(10)] == [50, 60]
    assert order.pending() == 0 and not order.ready()


def test_a_partition_with_records_on_the_broker_is_waited_for_then_given_up() -> None:
    clock = Clock()
    # B has 5 records on the broker, none fetched yet: A's later records must wait for them.
    consumer = Consumer({A: 2, B: 5}, {A: 2, B: 0})
    order: TimeOrder[Rec] = TimeOrder(consumer, low_water=10, wait_seconds=1.0, clock=clock)
    order.add({A: recs(A, 10, 20)})
    assert order.take(10) == [] and not order.ready()
    clock.now = 0.5
    assert order.take(10) == []
    # B's records come: everything goes, in time order, and B is not in the way any more.
    order.add({B: recs(B, 5, 15)})
    consumer.position_of[B] = 2
    assert [r.timestamp for r in order.take(3)] == [5, 10, 15]
    # B's buffer is empty and B still lags: A's 20 waits again...
    assert order.take(10) == []
    # ...for the wait at most, then goes without B, counted, and B is not waited for again
    # until records of its own come.
    clock.now = 2.0
    assert [r.timestamp for r in order.take(10)] == [20]
    assert order.gave_up == 1
    order.add({A: recs(A, 30, start=2)})
    assert [r.timestamp for r in order.take(10)] == [30]


def test_a_partition_caught_up_or_revoked_holds_nothing() -> None:
    consumer = Consumer({A: 2, B: 7}, {A: 2, B: 7})  # B has nothing past its position
    order: TimeOrder[Rec] = TimeOrder(consumer, low_water=10)
    order.add({A: recs(A, 10, 20)})
    assert [r.timestamp for r in order.take(10)] == [10, 20]

    consumer = Consumer({A: 2, B: None})  # B not fetched yet (no highwater): waited for
    order = TimeOrder(consumer, low_water=10, clock=Clock())
    order.add({A: recs(A, 10, 20)})
    assert order.take(10) == []
    del consumer.highwater_of[B]  # revoked
    order.forget([B])
    assert [r.timestamp for r in order.take(10)] == [10, 20]


def test_the_buffers_are_topped_up_below_low_water_and_a_reset_says_where_to_read_again() -> None:
    consumer = Consumer({A: 9, B: 9}, {A: 3, B: 1})
    order: TimeOrder[Rec] = TimeOrder(consumer, low_water=3, clock=Clock())
    assert order.wants_more()
    order.add({A: recs(A, 1, 2, 3), B: recs(B, 4)})
    assert not order.wants_more()  # enough buffered, and nothing awaited: no poll
    assert [r.timestamp for r in order.take(2)] == [1, 2]
    assert order.wants_more()
    # A retried batch: every buffered record is read again, from its partition's first.
    assert order.reset() == {A: 2, B: 0}
    assert order.pending() == 0


def test_the_runner_hands_a_backlog_over_in_time_order(pipeline: PipelineSettings) -> None:
    """Three partitions' records published one partition after the other, their timestamps
    interleaved (as a store's cameras' frames are on camera keys): handled by time, every
    record once, and committed to each partition's end."""
    topic = pipeline.topics.frames
    count = 12
    producer = make_producer(pipeline)
    expected = []
    try:
        for p in range(3):
            for i in range(count):
                ts = 1_700_000_000_000 + (3 * i + p) * 1000
                value = f"p{p}-{i}".encode()
                producer.send(topic, value, partition=p, timestamp_ms=ts).get(timeout=20)
                expected.append((ts, value))
    finally:
        producer.close()

    handler = Recording(pipeline.topics.encodings)
    group = pipeline.group("time-order")
    runner = Runner(handler, kafka=pipeline, topic=topic, group=group, max_batch=4, time_order=True)
    runner.run(max_idle_seconds=3)  # closes the runner when idle
    assert [v for v, _ in handler.handled] == [v for _, v in sorted(expected)]
    check = kafka_clients.consumer(pipeline, group_id=group, enable_auto_commit=False)
    try:
        assert [check.committed(TopicPartition(topic, p)) for p in range(3)] == [count] * 3
    finally:
        check.close()
    assert sorted(r.value for r in read_topic(pipeline, pipeline.topics.encodings)) == sorted(
        v for _, v in expected
    )
