"""The sink on the real Redis (and, end to end, the real Kafka): visits, days, erasure, replays."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
import redis
from click.testing import CliRunner
from kafka import KafkaConsumer, KafkaProducer

from facestream.runtime.runner import Poison, Record
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import Box, DeadLetter, MatchEvent, SchemaError, decode, derived_id
from facestream.services.sink.cli import sink_command
from facestream.services.sink.settings import SinkSettings
from facestream.services.sink.stats import StoreStats, stats_command, store_stats
from facestream.services.sink.store import Applier, StoreKeys, plan, purge
from facestream.services.sink.worker import SinkHandler
from facestream.tools.crm_example import Greeter
from tests.kafka_fixtures import pipeline_env

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
DAY = "2024-03-05"
NY = "America/New_York"
SINK = SinkSettings(visit_gap_seconds=1800, store_timezones={"ny": NY})


def match(
    who: str,
    at: datetime,
    *,
    store: str = "s1",
    camera: str = "c1",
    member: bool = False,
) -> MatchEvent:
    """A hand-built match; its event id is derived from its content, as the matcher's is."""
    obs = derived_id(store, camera, who, at.isoformat())
    return MatchEvent(
        event_id=derived_id("match", obs),
        kind="member" if member else "returning",
        member_id=who if member else None,
        face_id=None if member else who,
        store_id=store,
        camera_id=camera,
        captured_at=at,
        frame_id=f"f-{obs[:8]}",
        observation_id=obs,
        box=Box(top=0, right=10, bottom=10, left=0),
        model_version="test",
    )


def apply(r: redis.Redis, prefix: str, *events: MatchEvent, sink: SinkSettings = SINK) -> list[Any]:
    return Applier(r, prefix).apply([plan(e, sink, prefix) for e in events])


def stats(
    settings: PipelineSettings, r: redis.Redis, day: str = DAY, store: str = "s1"
) -> StoreStats:
    return store_stats(store, day, settings, client=r)


def test_visits_are_cut_by_the_gap_in_event_time(pipeline, client):
    p = pipeline.redis_prefix
    out = apply(
        client,
        p,
        match("a", T0),
        match("a", T0 + timedelta(minutes=10)),
        match("a", T0 + timedelta(minutes=41)),  # 31 min after the last event: a new visit
    )
    assert [o.visit_started for o in out] == [True, False, True]
    s = stats(pipeline, client)
    assert (s.pv, s.uv, s.new, s.returning) == (2, 1, 1, 0)
    # The one-event visit has no measurable dwell: the average is over the first visit only.
    assert (s.dwell_seconds_avg, s.dwell_visits) == (600.0, 1)


def test_a_pass_through_a_video_camera_has_its_own_dwell(pipeline, client):
    """A match of a person's pass (``last_seen`` set) spans captured_at..last_seen: a visit of
    one pass has a dwell, and a later event of the visit extends it from the span's end."""
    p = pipeline.redis_prefix

    def passing(who: str, at: datetime, seconds: float) -> MatchEvent:
        return match(who, at).model_copy(update={"last_seen": at + timedelta(seconds=seconds)})

    out = apply(
        client,
        p,
        passing("a", T0, 40),  # one pass of 40 s: dwell 40 s
        passing("b", T0, 30),
        match("b", T0 + timedelta(seconds=10)),  # inside b's pass: nothing longer
        passing("b", T0 + timedelta(minutes=5), 60),  # b back in view: the visit is 6 min
        passing("c", T0, 0),  # one frame: an instant, no dwell
    )
    assert [o.visit_started for o in out] == [True, True, False, False, True]
    s = stats(pipeline, client)
    assert (s.pv, s.uv, s.dwell_visits) == (3, 3, 2)
    assert s.dwell_seconds_avg == (40 + 360) / 2
    start = int(T0.timestamp() * 1000)
    visits = client.zrange(StoreKeys(p, "s1").visits("f:b"), 0, -1)
    assert visits == [f"{start}|{start + 360_000}|{DAY}|3"]
    # A second event of c's instant visit makes it measured, once.
    apply(client, p, match("c", T0 + timedelta(seconds=20)))
    s = stats(pipeline, client)
    assert (s.dwell_visits, s.dwell_seconds_avg) == (3, (40 + 360 + 20) / 3)
    with pytest.raises(ValueError, match="last_seen is before"):
        MatchEvent.model_validate(
            {**match("d", T0).model_dump(), "last_seen": T0 - timedelta(seconds=1)}
        )


def test_cameras_of_one_store_count_once_and_stores_apart(pipeline, client):
    p = pipeline.redis_prefix
    apply(
        client,
        p,
        match("a", T0, camera="door"),
        match("a", T0 + timedelta(minutes=2), camera="aisle"),
        match("a", T0 + timedelta(minutes=3), store="s2"),
    )
    assert (stats(pipeline, client).pv, stats(pipeline, client, store="s2").pv) == (1, 1)
    assert stats(pipeline, client).dwell_seconds_avg == 120.0


def test_out_of_order_events_extend_the_visit(pipeline, client):
    p = pipeline.redis_prefix
    out = apply(
        client,
        p,
        match("a", T0 + timedelta(minutes=20)),
        match("a", T0),  # late, within the gap of the visit: moves its start earlier
        match("a", T0 + timedelta(minutes=10)),
        match("a", T0 - timedelta(minutes=60)),  # late by more than a gap: a visit of its own
    )
    assert [o.visit_started for o in out] == [True, False, False, True]
    s = stats(pipeline, client)
    assert (s.pv, s.uv, s.dwell_seconds_avg) == (2, 1, 1200.0)
    visits = client.zrange(StoreKeys(p, "s1").visits("f:a"), 0, -1)
    start = int(T0.timestamp() * 1000)
    assert visits[-1] == f"{start}|{start + 20 * 60_000}|{DAY}|3"


def test_days_are_local_to_the_store(pipeline, client):
    p = pipeline.redis_prefix
    at = datetime(2024, 3, 6, 3, 0, tzinfo=UTC)  # 22:00 on March 5 in New York
    apply(
        client,
        p,
        match("a", at, store="ny"),
        match("b", at + timedelta(minutes=95), store="ny"),  # 23:35 local
        match("b", at + timedelta(minutes=115), store="ny"),  # 23:55: same visit
        match("b", at + timedelta(minutes=135), store="ny"),  # 00:15 March 6: same visit
        match("a", at + timedelta(hours=5), store="ny"),  # 03:00 March 6: a new day and visit
    )
    mar5 = stats(pipeline, client, "2024-03-05", "ny")
    mar6 = stats(pipeline, client, "2024-03-06", "ny")
    # b's visit crosses midnight: it counts (with its whole dwell) on the day it started.
    assert (mar5.pv, mar5.uv, mar5.new, mar5.dwell_seconds_avg) == (2, 2, 2, 2400.0)
    assert (mar6.pv, mar6.uv, mar6.new, mar6.returning) == (1, 1, 0, 1)
    assert stats(pipeline, client, "2024-03-06", "s1").pv == 0  # nothing leaks across stores


def test_new_and_returning_across_days_and_members(pipeline, client):
    p = pipeline.redis_prefix
    day2 = T0 + timedelta(days=1)
    apply(
        client,
        p,
        match("a", T0),
        match("m7", T0, member=True),
        match("a", day2),
        match("c", day2),
        match("c", day2 + timedelta(hours=2)),  # c's second visit on day 2: UV stays
        match("m7", day2 + timedelta(hours=1), member=True),
        match("m3", day2 + timedelta(hours=3), member=True),
    )
    s = stats(pipeline, client, "2024-03-06")
    assert (s.pv, s.uv, s.new, s.returning) == (5, 4, 2, 2)
    assert s.members == ("m3", "m7")
    arrivals = client.xrange(StoreKeys(p, "s1").arrivals)
    assert [f["member_id"] for _, f in arrivals] == ["m7", "m7", "m3"]


def test_a_late_visit_on_an_earlier_day_turns_the_later_new_visitor_returning(pipeline, client):
    """A store's cameras go through different detectors, so one camera's day-2 events can be
    applied before another's day-1 events: the counts end as if they had come in order."""
    p = pipeline.redis_prefix
    day2, day3 = T0 + timedelta(days=1), T0 + timedelta(days=2)
    in_order = [("a", T0), ("a", day2), ("a", day3), ("b", day2)]
    late = [("a", day3), ("b", day2), ("a", day2), ("a", T0)]
    for order, store in ((in_order, "s1"), (late, "s2")):
        apply(client, p, *[match(who, at, store=store) for who, at in order])
    for store in ("s1", "s2"):
        days = [
            stats(pipeline, client, d, store) for d in ("2024-03-05", "2024-03-06", "2024-03-07")
        ]
        assert [(s.uv, s.new, s.returning) for s in days] == [(1, 1, 0), (2, 1, 1), (1, 0, 1)]


def test_stats_command_prints_json_and_a_table(pipeline, client):
    apply(client, pipeline.redis_prefix, match("m7", T0, member=True), match("a", T0))
    env = pipeline_env(pipeline)
    cli = CliRunner()
    shown = cli.invoke(stats_command, ["--store", "s1", "--date", DAY, "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == {
        "store": "s1",
        "date": DAY,
        "pv": 2,
        "uv": 2,
        "new": 2,
        "returning": 0,
        "members": ["m7"],
        "dwell_seconds_avg": None,
        "dwell_visits": 0,
    }
    table = cli.invoke(stats_command, ["--store", "s1", "--date", DAY], env=env)
    assert "visitors (UV)  2" in table.output and "members        m7" in table.output


def test_replaying_the_same_events_changes_nothing(pipeline, client):
    p = pipeline.redis_prefix
    events = [match(w, T0 + timedelta(minutes=7 * i)) for i, w in enumerate("abcabcab")]
    events.append(match("m1", T0, member=True))
    apply(client, p, *events)
    before = (stats(pipeline, client), client.zrange(StoreKeys(p, "s1").visits("f:a"), 0, -1))
    again = apply(client, p, *reversed(events))
    assert {o.status for o in again} == {0}
    after = (stats(pipeline, client), client.zrange(StoreKeys(p, "s1").visits("f:a"), 0, -1))
    assert after == before
    assert client.xlen(StoreKeys(p, "s1").arrivals) == 1


def test_purge_erases_a_person_but_keeps_the_counts(pipeline, client):
    p = pipeline.redis_prefix
    keys = StoreKeys(p, "s1")
    apply(
        client,
        p,
        match("m1", T0, member=True),
        match("m1", T0 + timedelta(minutes=5), member=True),
        match("m1", T0 + timedelta(days=1), member=True),
        match("m1", T0, store="s2", member=True),
        match("f9", T0),
    )
    before = stats(pipeline, client)
    erased_at = T0 + timedelta(days=2)
    assert purge("m1", pipeline, client=client, now=erased_at) == 12
    assert not client.exists(keys.visits("m:m1"), keys.index("m:m1"))
    assert not client.exists(StoreKeys(p, "s2").visits("m:m1"))
    assert client.smembers(keys.day_uv(DAY)) == {"f:f9"}
    assert not client.exists(keys.day_members(DAY))
    assert client.xlen(keys.arrivals) == 0
    after = stats(pipeline, client)
    assert (after.pv, after.uv, after.members) == (before.pv, before.uv, ())
    # A backlog event from before the erasure cannot bring the member back; a later one can.
    late = match("m1", T0 + timedelta(hours=1), member=True)
    fresh = match("m1", erased_at + timedelta(minutes=1), member=True)
    assert [o.status for o in apply(client, p, late, fresh)] == [-1, 1]


def test_handler_plans_in_handle_and_applies_before_commit(pipeline, client):
    handler = SinkHandler(Applier(client, pipeline.redis_prefix), SINK)

    def record(value: bytes, offset: int) -> Record:
        return Record("matches.v1", 0, offset, b"store-1", value)

    assert handler.handle(record(match("a", T0).to_bytes(), 0)) == []
    with pytest.raises(SchemaError):
        handler.handle(record(b"not json", 1))
    nameless = match("a", T0).model_copy(update={"face_id": None})
    with pytest.raises(Poison):
        handler.handle(record(nameless.to_bytes(), 2))
    assert stats(pipeline, client).pv == 0  # nothing written before the commit point
    handler.before_commit()
    handler.handle(record(match("a", T0).to_bytes(), 0))  # redelivered after a crash
    handler.before_commit()
    assert stats(pipeline, client).pv == 1


def test_crm_example_greets_a_member_once_per_visit():
    greeter = Greeter(SinkSettings(store_timezones={"7": NY}))
    first = match("1234", T0, store="7", member=True)
    lines = [
        greeter.offer(e)
        for e in (
            first,
            first,  # redelivered
            match("1234", T0 + timedelta(minutes=3), store="7", camera="c2", member=True),
            match("f1", T0, store="7"),
            match("1234", T0 + timedelta(hours=3), store="7", member=True),
        )
    ]
    assert lines == [
        "member 1234 just entered store 7 at 10:00 (camera c1)",
        None,
        None,
        None,
        "member 1234 just entered store 7 at 13:00 (camera c1)",
    ]


# -- end to end: the sink process over the real matches topic --------------------------------


def traffic(n: int, seed: int = 7) -> list[MatchEvent]:
    """``n`` matches over three stores, two days, members and anonymous people, some late."""
    rng = random.Random(seed)
    events = []
    for _ in range(n):
        who = f"p{rng.randrange(12)}"
        at = T0 + timedelta(minutes=rng.randrange(0, 2 * 24 * 60, 7))
        store = rng.choice(["s1", "s2", "ny"])
        events.append(match(who, at, store=store, camera=rng.choice("abc"), member=who < "p4"))
    return events


def produce(settings: PipelineSettings, values: list[tuple[str, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    for key, value in values:
        producer.send(settings.topics.matches, key=key.encode(), value=value)
    producer.flush(timeout=30)
    producer.close()


def start_sink(
    settings: PipelineSettings, log: Path, idle: float = 30.0
) -> subprocess.Popen[bytes]:
    env = pipeline_env(settings)
    env["FACESTREAM_SINK_MAX_BATCH"] = "5"
    env["FACESTREAM_SINK_STORE_TIMEZONES"] = json.dumps(SINK.store_timezones)
    # Static membership: the restarted sink takes over at once from the one killed.
    env["FACESTREAM_SINK_GROUP_INSTANCE_ID"] = "sink-0"
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "facestream.services.sink", "--max-idle-seconds", str(idle)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )


def assert_same_as_clean_run(pipeline, client, events: list[MatchEvent]) -> None:
    """Apply ``events`` in-process under another prefix (a clean run); compare every day."""
    ref = pipeline.model_copy(update={"redis_prefix": pipeline.redis_prefix + "ref"})
    apply(client, ref.redis_prefix, *events)
    days = {
        (e.store_id, e.captured_at.astimezone(SINK.zone_for(e.store_id)).date()) for e in events
    }
    for store, day in sorted(days):
        assert store_stats(store, day, pipeline, client=client) == store_stats(
            store, day, ref, client=client
        )
    for e in events[:20]:
        person = f"m:{e.member_id}" if e.member_id else f"f:{e.face_id}"
        got, want = (StoreKeys(s.redis_prefix, e.store_id).visits(person) for s in (pipeline, ref))
        assert client.zrange(got, 0, -1) == client.zrange(want, 0, -1)


def seen(client: redis.Redis, settings: PipelineSettings) -> int:
    """How many events the sink has applied (each store's recent event ids: all of them, as
    these tests stay under the window)."""
    stores = cast(set[str], client.smembers(f"{settings.redis_prefix}:stores"))
    return sum(int(client.zcard(StoreKeys(settings.redis_prefix, s).recent)) for s in stores)


def finish(
    sink: subprocess.Popen[bytes], client, settings, events, log: Path, within: float = 30.0
) -> None:
    """Wait (at most ``within`` s) until the sink has applied every event, then stop it with
    SIGTERM."""
    distinct = len({e.event_id for e in events})
    deadline = time.monotonic() + within
    while seen(client, settings) < distinct and time.monotonic() < deadline:
        assert sink.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    sink.terminate()  # finish the batch in hand, commit, stop
    assert sink.wait(timeout=20) == 0, log.read_text()[-3000:]
    assert seen(client, settings) == distinct


def test_sink_process_dead_letters_poison_and_goes_on(pipeline, client, tmp_path):
    events = traffic(60)
    values = [(e.store_id, e.to_bytes()) for e in events]
    values.insert(20, ("s1", b"\x00 not json"))
    produce(pipeline, values)
    log = tmp_path / "sink.log"
    finish(start_sink(pipeline, log), client, pipeline, events, log)

    dlq = KafkaConsumer(
        pipeline.topics.dlq(pipeline.topics.matches),
        bootstrap_servers=pipeline.kafka_bootstrap,
        auto_offset_reset="earliest",
    )
    letters: list[DeadLetter] = []
    deadline = time.monotonic() + 10
    while not letters and time.monotonic() < deadline:
        for records in dlq.poll(timeout_ms=500).values():
            letters += [decode(DeadLetter, r.value) for r in records]
    dlq.close()
    assert [(d.stage, d.reason, d.source_key) for d in letters] == [("sink", "not_json", "s1")]
    assert_same_as_clean_run(pipeline, client, events)


def test_sink_killed_mid_stream_then_restarted_counts_exactly_once(pipeline, client, tmp_path):
    events = traffic(600, seed=11)
    produce(pipeline, [(e.store_id, e.to_bytes()) for e in events])
    log = tmp_path / "sink.log"
    registry = f"{pipeline.redis_prefix}:stores"
    sink = start_sink(pipeline, log)
    deadline = time.monotonic() + 30
    # The registry is written with the first batch: kill as soon as one batch is in Redis.
    while not client.exists(registry) and time.monotonic() < deadline and sink.poll() is None:
        time.sleep(0.01)
    os.kill(sink.pid, signal.SIGKILL)  # no flush, no commit, no goodbye
    sink.wait(timeout=10)
    assert 0 < seen(client, pipeline) < len(events), "the kill should land mid-stream"

    # The restart replays the uncommitted batches: applied already, they must change nothing.
    finish(start_sink(pipeline, log), client, pipeline, events, log)
    assert_same_as_clean_run(pipeline, client, events)


def test_settings_refuse_unknown_zones():
    with pytest.raises(ValueError, match="Mars/Olympus"):
        SinkSettings(store_timezones={"7": "Mars/Olympus"})
    assert SINK.zone_for("ny") == ZoneInfo(NY) and SINK.zone_for("s1") == ZoneInfo("UTC")


def test_start_up_errors_are_one_message(live_stack: PipelineSettings) -> None:
    cli = CliRunner()
    args = ["--max-idle-seconds", "1"]
    env = {"FACESTREAM_METRICS_PORT": "0", "FACESTREAM_REDIS_URL": live_stack.redis_url}
    bad = cli.invoke(sink_command, args, env={**env, "FACESTREAM_SINK_TIMEZONE": "Mars/Olympus"})
    assert bad.exit_code == 2, bad.output
    assert "invalid settings: FACESTREAM_SINK_TIMEZONE: " in bad.output
    assert "Traceback" not in bad.output

    away = "redis://:hunter2@127.0.0.1:1/0"
    no_redis = cli.invoke(sink_command, args, env={**env, "FACESTREAM_REDIS_URL": away})
    assert no_redis.exit_code == 1, no_redis.output
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in no_redis.output
    assert "hunter2" not in no_redis.output

    no_kafka = cli.invoke(
        sink_command, args, env={**env, "FACESTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    )
    assert no_kafka.exit_code == 1, no_kafka.output
    assert "cannot reach Kafka at 127.0.0.1:1" in no_kafka.output
