"""The whole pipeline on the real broker and Redis: a simulated store day against its truth,
and the same day with workers killed (SIGKILL) mid-stream and restarted."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer

from facestream.admin.erasure import erase
from facestream.admin.members import publish_members
from facestream.devstack.workers import spawn_worker, stop_workers
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import MatchEvent, decode
from facestream.services.camera.publisher import Frame, frame_id, frames_from_manifest, publish
from facestream.services.matcher.presence import live_matchers
from facestream.services.sink.stats import store_stats
from facestream.tools import replay, simulate
from tests.kafka_fixtures import read_topic

KEYS = ("pv", "uv", "new", "returning", "members", "dwell_seconds_avg")


@pytest.fixture(scope="module")
def scenario(datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> simulate.Scenario:
    return simulate.build(datasets, tmp_path_factory.mktemp("store"))


def test_replay_equals_truth(scenario: simulate.Scenario, pipeline: PipelineSettings) -> None:
    lines: list[str] = []
    stats = replay.run(
        store=scenario.store,
        members=scenario.members_dir,
        manifest=scenario.manifest,
        settings=pipeline,
        timezone=scenario.timezone,
        echo=lines.append,
        timeout=300,
    )
    truth = scenario.truth()
    assert truth["pv"] > truth["uv"] > 0 and truth["returning"] > 0 and truth["members"]
    assert {k: stats.as_dict()[k] for k in KEYS} == {k: truth[k] for k in KEYS}
    assert any("member " in line for line in lines)  # events were shown as they arrived
    # The replay stopped the workers it started: their groups are empty again.
    admin = KafkaAdminClient(bootstrap_servers=pipeline.kafka_bootstrap)
    try:
        for stage, _ in replay.STAGES:
            group = pipeline.group(stage)
            assert not admin.describe_groups([group])[group]["members"]
    finally:
        admin.close()


def _start(stage: str, settings: PipelineSettings, timezone: str) -> subprocess.Popen[bytes]:
    return spawn_worker(
        stage,
        settings,
        extra_env={
            # Small batches so that a kill lands mid-stream with work committed and work not.
            "FACESTREAM_DETECTOR_MAX_BATCH": "2",
            "FACESTREAM_MATCHER_MAX_BATCH": "2",
            "FACESTREAM_SINK_MAX_BATCH": "2",
            "FACESTREAM_SINK_STORE_TIMEZONES": f'{{"store-7": "{timezone}"}}',
        },
    )


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM every worker, then wait (bounded) for each; kill what does not stop."""
    stop_workers(procs.items())


def _progress(settings: PipelineSettings) -> replay.Progress:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    probe = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        return replay.progress(settings, admin, probe)
    finally:
        probe.close()
        admin.close()


def _wait(settings: PipelineSettings, seconds: float, matched: int | None = None) -> None:
    """Until the matcher has committed ``matched`` observations, or (None) until every stage
    has committed all of its input twice in a row."""
    deadline = time.monotonic() + seconds
    stable = 0
    p = _progress(settings)
    while time.monotonic() < deadline:
        p = _progress(settings)
        if matched is not None and p.done["matcher"] >= matched:
            return
        stable = stable + 1 if matched is None and p.drained else 0
        if stable >= 2:
            return
        time.sleep(0.5)
    raise AssertionError(f"the pipeline did not get there in {seconds}s: {p.line()}")


def test_sigkill_mid_stream_loses_and_doubles_nothing(
    scenario: simulate.Scenario, pipeline: PipelineSettings
) -> None:
    stages = ("detector", "matcher", "sink")
    procs = {stage: _start(stage, pipeline, scenario.timezone) for stage in stages}
    try:
        publish_members(scenario.members_dir, pipeline)
        producer = make_producer(pipeline.kafka_bootstrap)
        report = publish(
            producer,
            pipeline.topics.frames,
            scenario.store,
            frames_from_manifest(scenario.manifest),
        )
        producer.close()
        assert report.published == len(scenario.appearances)
        # Once the matcher has committed a few observations, kill every worker without warning.
        _wait(pipeline, 180, matched=6)
        for proc in procs.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        killed_at = _progress(pipeline)
        assert killed_at.done["detector"] < killed_at.total["detector"], "kill came too late"
        procs = {stage: _start(stage, pipeline, scenario.timezone) for stage in stages}
        _wait(pipeline, 240)
    finally:
        _stop(procs)
    stats = store_stats(scenario.store, scenario.day, pipeline).as_dict()
    truth = scenario.truth()
    assert {k: stats[k] for k in KEYS} == {k: truth[k] for k in KEYS}


def test_erasure_reaches_every_copy(
    scenario: simulate.Scenario, pipeline: PipelineSettings
) -> None:
    """After a replay: erasing a member removes them from members.v1 (tombstone), from a live
    matcher (acknowledged; their face now comes back as a stranger) and from Redis."""
    replay.run(
        store=scenario.store,
        members=scenario.members_dir,
        manifest=scenario.manifest,
        settings=pipeline,
        timezone=scenario.timezone,
        echo=lambda _: None,
        show_events=False,
        timeout=300,
    )
    member = scenario.truth()["members"][0]
    client = redis.Redis.from_url(pipeline.redis_url, decode_responses=True)
    pattern = f"{pipeline.redis_prefix}:*m:{member}*"
    assert list(client.scan_iter(pattern)), "the member's visits should be in Redis"
    stages = ("detector", "matcher", "sink")
    procs = {stage: _start(stage, pipeline, scenario.timezone) for stage in stages}
    try:
        _wait_live_matcher(client, pipeline)
        result = erase(member, pipeline, timeout=60)
        assert result.confirmed and result.acknowledged, result
        # Topic: the member's latest record is a tombstone.
        latest = {r.key: r.value for r in read_topic(pipeline, pipeline.topics.members)}
        assert latest[member.encode()] is None
        # Redis: no history, day set or stats entry names them any more; only the erasure
        # marker does, which drops their events still in the backlog (and expires in 7 days).
        left = list(client.scan_iter(pattern))
        assert [k.split(":")[-3] for k in left] == ["erased"], left
        assert member not in store_stats(scenario.store, scenario.day, pipeline).members
        # Matcher: the same photo, seen again today, is now a stranger.
        photo = next((scenario.members_dir / member).iterdir())
        seen = next(a.at for a in scenario.appearances if a.person == member)
        frame = Frame(photo.read_bytes(), "entrance", seen + timedelta(hours=3), "after-erasure")
        producer = make_producer(pipeline.kafka_bootstrap)
        publish(producer, pipeline.topics.frames, scenario.store, [frame])
        producer.close()
        _wait(pipeline, 120)
        last = decode(MatchEvent, read_topic(pipeline, pipeline.topics.matches)[-1].value)
        assert last.frame_id == frame_id(scenario.store, frame)
        assert (last.kind, last.member_id) == ("new", None)
    finally:
        _stop(procs)


def _wait_live_matcher(client: redis.Redis, settings: PipelineSettings) -> None:
    deadline = time.monotonic() + 120
    while not live_matchers(client, settings.redis_prefix):
        assert time.monotonic() < deadline, "the matcher never registered"
        time.sleep(0.5)
