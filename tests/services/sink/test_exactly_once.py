"""Exactly once without a key per event: Kafka offsets per (store, partition) and a bounded
window of event ids, kept by the apply script with the visits (real Redis)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis

from facestream.runtime.settings import PipelineSettings
from facestream.schemas import MatchEvent
from facestream.services.sink.script import ARGS_PER_EVENT, KEYS_PER_EVENT
from facestream.services.sink.settings import SinkSettings
from facestream.services.sink.stats import store_stats
from facestream.services.sink.store import Applier, Outcome, Position, StoreKeys, plan, purge
from tests.services.sink.test_sink import DAY, SINK, T0, match, traffic

TOPIC = "matches.v1"


@pytest.fixture
def pipeline(live_stack: PipelineSettings) -> PipelineSettings:
    """Settings with a Redis prefix of the test's own (no topics: these tests need none)."""
    return live_stack.model_copy(update={"redis_prefix": f"t{uuid.uuid4().hex[:10]}"})


def at(
    r: redis.Redis,
    prefix: str,
    records: list[tuple[int, int, MatchEvent]],
    sink: SinkSettings = SINK,
) -> list[int]:
    """Apply ``(partition, offset, event)`` records as the sink reads them; their statuses."""
    plans = [plan(e, sink, prefix, Position(TOPIC, p, o)) for p, o, e in records]
    return [o.status for o in Applier(r, prefix).apply(plans)]


def day_of(settings: PipelineSettings, r: redis.Redis, store: str = "s1") -> tuple[object, ...]:
    s = store_stats(store, DAY, settings, client=r)
    return (s.pv, s.uv, s.new, s.returning, s.dwell_seconds_avg, s.dwell_visits, s.members)


def test_the_plan_matches_the_script_layout(pipeline: PipelineSettings) -> None:
    p = plan(match("a", T0), SINK, "fs", Position(TOPIC, 3, 17))
    assert (len(p.keys), len(p.args)) == (KEYS_PER_EVENT, ARGS_PER_EVENT)
    # ... the position, then the end of the event's span (an instant: its own time).
    assert p.args[-3:] == (f"{TOPIC}:3", 17, p.args[0])
    assert all("{s1}" in key for key in p.keys)


def test_a_redelivered_record_is_skipped_by_its_offset_long_after_its_id_is_forgotten(
    pipeline: PipelineSettings, client: redis.Redis
) -> None:
    p = pipeline.redis_prefix
    small = SINK.model_copy(update={"dedup_window_events": 100})
    events = [match(f"p{i % 7}", T0 + timedelta(minutes=3 * i)) for i in range(150)]
    assert at(client, p, [(0, 1000 + i, e) for i, e in enumerate(events)], small) == [1] * 150
    keys = StoreKeys(p, "s1")
    assert client.zcard(keys.recent) == 100  # bounded: the last 100 ids only
    assert client.hget(keys.offsets, f"{TOPIC}:0") == "1149"
    before = day_of(pipeline, client)
    # A restart from an old commit: the first events' ids have left the window; offsets hold.
    again = at(client, p, [(0, 1000 + i, e) for i, e in enumerate(events[:60])], small)
    assert again == [-2] * 60
    assert day_of(pipeline, client) == before
    # No key per event, whatever the traffic.
    assert not list(client.scan_iter(match=f"{p}:*seen*"))


def test_a_copy_republished_at_a_new_offset_is_dropped_by_its_event_id(
    pipeline: PipelineSettings, client: redis.Redis
) -> None:
    """A matcher that handles a batch again publishes the same events at new offsets."""
    p = pipeline.redis_prefix
    batch = [match("a", T0), match("b", T0 + timedelta(minutes=1)), match("m1", T0, member=True)]
    assert at(client, p, [(0, i, e) for i, e in enumerate(batch)]) == [1, 1, 1]
    copies = [(0, 10 + i, e) for i, e in enumerate(batch)] + [(0, 13, match("c", T0))]
    assert at(client, p, copies) == [0, 0, 0, 1]
    assert client.hget(StoreKeys(p, "s1").offsets, f"{TOPIC}:0") == "13"
    assert day_of(pipeline, client)[:2] == (4, 4)
    assert client.xlen(StoreKeys(p, "s1").arrivals) == 1


def test_one_batch_of_several_stores_and_partitions(
    pipeline: PipelineSettings, client: redis.Redis
) -> None:
    """Each store keeps its own marks: a batch that mixes stores, applied twice, counts once,
    and offsets of one store never hide another store's events."""
    p = pipeline.redis_prefix
    events = traffic(90, seed=3)
    partition = {"s1": 0, "s2": 0, "ny": 1}
    offsets = {0: 0, 1: 0}
    records = []
    for e in events:
        part = partition[e.store_id]
        records.append((part, offsets[part], e))
        offsets[part] += 1
    assert set(at(client, p, records)) <= {1, 0}
    assert at(client, p, records) == [-2] * len(records)
    ref = pipeline.model_copy(update={"redis_prefix": p + "ref"})
    Applier(client, ref.redis_prefix).apply([plan(e, SINK, ref.redis_prefix) for e in events])
    for store in ("s1", "s2", "ny"):
        assert day_of(pipeline, client, store) == day_of(ref, client, store)
        assert not client.hexists(StoreKeys(p, store).offsets, f"{TOPIC}:2")


def test_after_a_partition_count_change_both_partitions_are_tracked(
    pipeline: PipelineSettings, client: redis.Redis
) -> None:
    """More partitions move a store to another one, whose offsets start lower: its new events
    must not be taken for old ones, and its old backlog is still deduplicated by its own."""
    p = pipeline.redis_prefix
    old = [match("a", T0 + timedelta(minutes=i)) for i in range(3)]
    new = [match("b", T0 + timedelta(minutes=i)) for i in range(3)]
    assert at(client, p, [(0, 500 + i, e) for i, e in enumerate(old)]) == [1, 1, 1]
    assert at(client, p, [(5, i, e) for i, e in enumerate(new)]) == [1, 1, 1]
    # The old partition's backlog redelivered (a sink that lagged), and a matcher's copy of
    # an old event that landed on the new partition.
    assert at(client, p, [(0, 501, old[1]), (5, 3, old[2])]) == [-2, 0]
    marks = client.hgetall(StoreKeys(p, "s1").offsets)
    assert (marks[f"{TOPIC}:0"], marks[f"{TOPIC}:5"]) == ("502", "3")
    assert day_of(pipeline, client)[:2] == (2, 2)


def test_two_sinks_on_one_partition_after_a_rebalance_apply_each_record_once(
    pipeline: PipelineSettings, client: redis.Redis
) -> None:
    """The old owner still finishing its batch while the new one replays from the last commit:
    their script calls interleave, and every record counts once."""
    p = pipeline.redis_prefix
    events = [e for e in traffic(120, seed=5) if e.store_id == "s1"]
    records = [(0, i, e) for i, e in enumerate(events)]
    old_owner, new_owner = Applier(client, p), Applier(client, p)

    def apply(applier: Applier, chunk: list[tuple[int, int, MatchEvent]]) -> list[Outcome]:
        return applier.apply([plan(e, SINK, p, Position(TOPIC, q, o)) for q, o, e in chunk])

    apply(old_owner, records[:10])  # committed
    apply(old_owner, records[10:13])  # applied, not committed: then the partition moves
    apply(new_owner, records[10:25])  # the new owner replays from offset 10...
    late = apply(old_owner, records[13:20])  # ...while the old one finishes its batch
    assert {o.status for o in late} == {-2}
    apply(new_owner, records[25:])
    ref = pipeline.model_copy(update={"redis_prefix": p + "ref"})
    Applier(client, ref.redis_prefix).apply([plan(e, SINK, ref.redis_prefix) for e in events])
    assert day_of(pipeline, client) == day_of(ref, client)


def test_legacy_seen_keys_are_honoured_while_they_last(
    pipeline: PipelineSettings, client: redis.Redis
) -> None:
    """An upgrade: events an earlier sink applied (its seen: key) are not counted again."""
    p = pipeline.redis_prefix
    old, fresh = match("a", T0), match("b", T0)
    client.set(StoreKeys(p, "s1").seen(old.event_id), "1", ex=3600)
    assert at(client, p, [(0, 7, old), (0, 8, fresh)]) == [0, 1]
    off = SINK.model_copy(update={"legacy_seen_keys": False})
    assert at(client, p, [(1, 0, old)], off) == [1]


def test_erasure_leaves_no_identity_in_the_dedup_state(
    pipeline: PipelineSettings, client: redis.Redis
) -> None:
    p = pipeline.redis_prefix
    events = [match("m1", T0, member=True), match("m1", T0 + timedelta(minutes=5), member=True)]
    at(client, p, [(0, i, e) for i, e in enumerate(events)])
    assert purge("m1", pipeline, client=client, now=T0 + timedelta(days=1)) > 0
    left = [k for k in client.scan_iter(match=f"{p}:*") if "m1" in k]
    assert {k.split(":")[-3] for k in left} == {"erased"}
    # The offsets and recent ids name no one: field names are partitions, members event ids.
    keys = StoreKeys(p, "s1")
    assert set(client.hkeys(keys.offsets)) == {f"{TOPIC}:0", "events"}
    assert set(client.zrange(keys.recent, 0, -1)) == {e.event_id for e in events}
