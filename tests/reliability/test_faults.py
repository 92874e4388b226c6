"""Faults lose nothing and count nothing twice (issue 8, item 3), on the real stack.

A small simulated store day (members, new and returning visitors, real shared photos) goes
through real detector, matcher and sink processes twice, on a Kafka broker and a redis-server of
this module's own (:mod:`.private_stack`; restarting the shared ones would break the tests that
run beside this one): once undisturbed, once under a schedule of faults, frames published a
chunk at a time so that each fault lands mid-run with work in flight:

* each worker kind SIGKILLed three times and restarted (the matcher and the sink just after
  being woken from a pause with a backlog, so that they die part-way through it);
* the broker restarted, and Redis SIGKILLed and started again (it reloads its append-only file);
* a second matcher joining and leaving (1 -> 2 -> 1 processes).

Frames are keyed by camera (``--key-by camera``), so the store's three cameras reach the
detector on different partitions, and their observations reach the matcher in an order that
depends on timing; the matcher decides them in capture order (services/matcher/ordering.py).

Afterwards the store's figures (PV, UV, new, returning, members, dwell, for every day) and each
observation's decision are exactly the undisturbed run's; the sink applied each event id once,
nothing was dead-lettered, and every worker is alive. docs/reliability.md, "The fault suite".
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
import redis
from kafka.errors import KafkaError

from facestream.admin.members import publish_members
from facestream.core.engine import FaceEngine
from facestream.devstack import kafka_broker
from facestream.devstack.workers import spawn_worker, stop_workers
from facestream.runtime import kafka_clients
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import MatchEvent, decode
from facestream.schemas.keys import partition_for
from facestream.services.camera.publisher import Frame, frames_from_manifest, publish
from facestream.services.sink.stats import store_stats
from facestream.services.sink.store import StoreKeys
from facestream.tools import replay, simulate
from tests.reliability.private_stack import PARTITIONS, PrivateStack

pytestmark = pytest.mark.timeout(400)

PLAN = simulate.Plan(
    stores=(simulate.StorePlan("store-18", "Europe/Paris"),),
    members=2,
    returning_later=1,
    returning_same_day=1,
    once=3,
    seed=7,
)
"""A small day with members, returning and new visitors, and a frame for every fault. The
store's partition (2 of 4) is one that a second matcher takes over when it joins: static members
(the first matcher) are assigned first, and the range assignor gives them partitions 0-1."""
SEED = 8
WAIT = 90.0
"""Longest wait for any one step of a run (they take a few seconds)."""
STAGES = ("detector", "matcher", "sink")

Decision = tuple[str, str, str | None, str | None]
"""An observation's match event as the sink reads it: event id, kind, member id, FaceId."""


@dataclass(frozen=True)
class Day:
    scenario: simulate.Scenario
    members: Path
    frames: list[Frame]

    @property
    def store(self) -> str:
        return self.scenario.stores[0].store_id

    @property
    def timezone(self) -> str:
        return self.scenario.stores[0].timezone


@dataclass(frozen=True)
class Outcome:
    """What a run left behind: the sink's figures, the decisions in matches.v1, and more."""

    stats: dict[str, dict[str, object]]
    """Local day -> the sink's stats for the store."""
    decisions: dict[str, set[Decision]]
    """Observation id -> every distinct decision matches.v1 holds for it."""
    events: int
    applied: int
    """Events the sink applied, counted in the visits it recorded."""
    dead_letters: int


@dataclass
class Fault:
    """One injected fault, for the report: what, and how much work was in flight."""

    what: str
    pending: int = 0
    """Records of the target's input not committed when the fault struck."""
    seconds: float = 0.0
    """How long the broker or Redis was away."""
    at: float = field(default_factory=time.monotonic)


@pytest.fixture(scope="module")
def day(lfw: Path, engine: FaceEngine, tmp_path_factory: pytest.TempPathFactory) -> Day:
    """The store day, planned (faces checked) and its photos read once for the module."""
    scenario = simulate.build(lfw, PLAN, engine)
    members, manifest, _ = scenario.write(tmp_path_factory.mktemp("day"))
    frames = [f for f in frames_from_manifest(manifest) if isinstance(f, Frame)]
    assert len(frames) == len(scenario.sightings)
    kinds = {s.person[:2] for s in scenario.sightings}
    assert kinds == {simulate.MEMBER, simulate.STRANGER}
    return Day(scenario, members, frames)


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    own = PrivateStack(tmp_path_factory.mktemp("stack"))
    try:
        own.up()
        yield own
    finally:
        own.down()


class Pipeline:
    """Worker processes of one run, their input, and the means to disturb them."""

    def __init__(self, own: PrivateStack, settings: PipelineSettings, day: Day, logs: Path):
        self.own, self.settings, self.day, self.logs = own, settings, day, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.joins: dict[str, int] = {}
        """Worker -> assignments its log had when it was last started."""
        self.sent = 0
        self.faults: list[Fault] = []
        self.began = self.ended = time.monotonic()

    # -- workers -----------------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start worker ``name`` (a stage, or ``matcher-b``: a second, dynamic matcher)."""
        stage = name.split("-")[0]
        env = {
            "FACESTREAM_SINK_STORE_TIMEZONES": json.dumps(
                {self.day.store: PLAN.stores[0].timezone}
            ),
            # Short waits between retries: Redis and the broker come back within seconds.
            "FACESTREAM_RETRY_MAX_SECONDS": "1",
            # Small batches, so that a kill lands with work committed and work not.
            f"FACESTREAM_{stage.upper()}_MAX_BATCH": "1" if stage == "detector" else "2",
        }
        if name in STAGES:
            # Static membership: a restarted worker takes over at once, as a StatefulSet pod
            # would, instead of waiting out its dead predecessor's 45 s session.
            env[f"FACESTREAM_{stage.upper()}_GROUP_INSTANCE_ID"] = f"{name}-0"
        self.joins[name] = self._assignments(name)
        with (self.logs / f"{name}.log").open("ab") as out:
            self.procs[name] = spawn_worker(
                stage, self.settings, extra_env=env, stdout=out, stderr=out
            )

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        stop_workers(self.procs.items())

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
            for p in sorted(self.logs.glob("*.log"))
        )

    # -- input and progress ------------------------------------------------------------------

    def publish(self, count: int) -> None:
        """Publish the day's next ``count`` frames (in order, on the store's partition)."""
        frames = self.day.frames[self.sent : self.sent + count]
        producer = make_producer(self.settings)
        try:
            report = publish(
                producer, self.settings.topics.frames, self.day.store, frames, key_by="camera"
            )
        finally:
            producer.close(timeout=10)
        assert report.published == len(frames), report
        self.sent += len(frames)

    def progress(self) -> replay.Progress:
        """Committed offsets against input, per stage; retried (bounded) while the broker is
        restarting or loading its groups."""
        deadline = time.monotonic() + WAIT
        while True:
            try:
                admin = kafka_broker.admin_client(self.own.config, timeout=10.0)
                probe = kafka_clients.consumer(
                    self.settings, enable_auto_commit=False, request_timeout_ms=10_000
                )
            except KafkaError as exc:
                assert time.monotonic() < deadline, f"no progress to read: {exc!r}"
                time.sleep(0.2)
                continue
            try:
                return replay.progress(self.settings, admin, probe)
            except KafkaError as exc:
                assert time.monotonic() < deadline, f"no progress to read: {exc!r}"
                time.sleep(0.2)
            finally:
                probe.close()
                admin.close()

    def wait(self, done: Callable[[replay.Progress], bool], what: str) -> replay.Progress:
        """Poll progress until ``done`` holds (bounded: :data:`WAIT`)."""
        deadline = time.monotonic() + WAIT
        while True:
            dead = [name for name, alive in self.alive().items() if not alive]
            assert not dead, f"{what}: {dead} exited\n{self.log_tail()}"
            p = self.progress()
            if done(p):
                return p
            assert time.monotonic() < deadline, (
                f"{what}: not reached in {WAIT}s ({p.line()}; alive {self.alive()})\n"
                + self.log_tail()
            )
            time.sleep(0.1)

    def drain(self) -> None:
        """Until every stage has committed all of its input, twice in a row."""
        stable = [0]

        def twice(p: replay.Progress) -> bool:
            ok = p.drained and p.done["detector"] == self.sent
            stable[0] = stable[0] + 1 if ok else 0
            return stable[0] >= 2

        self.wait(twice, "drained")

    def _assignments(self, name: str) -> int:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text.count("partitions assigned: [")

    def consuming(self) -> bool:
        """Whether every worker has been assigned its partitions since it was last started.

        A worker that cannot reach Kafka or Redis at start exits (its supervisor restarts it,
        by design); the broker and Redis are restarted only under running workers."""
        return all(self._assignments(name) > self.joins[name] for name in self.procs)

    def assigned(self, name: str) -> list[int]:
        """The partitions worker ``name`` was last assigned, as its log says."""
        lines = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
        found = [line for line in lines if "partitions assigned: [" in line]
        assert found, f"{name} was never assigned partitions\n{self.log_tail()}"
        return [int(n) for n in found[-1].rsplit("[", 1)[1].rstrip("]").split(",")]

    def matcher_members(self) -> int:
        """Members of the matchers' group once it is stable (else -1)."""
        admin = kafka_broker.admin_client(self.own.config, timeout=10.0)
        try:
            group = self.settings.group("matcher")
            described = admin.describe_groups([group])[group]
            return len(described["members"]) if described.get("group_state") == "Stable" else -1
        except KafkaError:
            return -1
        finally:
            admin.close()

    # -- outcome -----------------------------------------------------------------------------

    def outcome(self) -> Outcome:
        settings = self.settings
        events = [
            decode(MatchEvent, v) for v in replay.read_values(settings, settings.topics.matches)
        ]
        decisions: dict[str, set[Decision]] = {}

        for e in events:
            decision = (e.event_id, e.kind, e.member_id, e.face_id)
            decisions.setdefault(e.observation_id, set()).add(decision)
        client = redis.Redis.from_url(settings.redis_url)
        try:
            # Each visit is ``start|end|day|events``: the events the sink applied, by person.
            pattern = StoreKeys(settings.redis_prefix, self.day.store).visits("*")
            applied = sum(
                int(cast(bytes, visit).rsplit(b"|", 1)[-1])
                for key in client.scan_iter(pattern)
                for visit in client.zrange(key, 0, -1)
            )
            stats = {
                d.date: store_stats(self.day.store, d.date, settings, client=client).as_dict()
                for d in self.day.scenario.all_days()
            }
        finally:
            client.close()
        letters = sum(
            len(replay.read_values(settings, settings.topics.dlq(topic)))
            for topic in (
                settings.topics.frames,
                settings.topics.encodings,
                settings.topics.matches,
            )
        )
        return Outcome(stats, decisions, len(events), applied, letters)


@dataclass
class Schedule:
    """The faulted run's faults, each with the chunk of frames it strikes in (``rng``: the
    seeded delay between waking a worker and killing it)."""

    run: Pipeline
    rng: random.Random = field(default_factory=lambda: random.Random(SEED))

    def kill_detector(self) -> None:
        """SIGKILL the detector once it has committed a frame of a fresh chunk of two (it
        handles one frame per batch: the other is in its hands or waiting)."""
        run = self.run
        before = run.progress().done["detector"]
        run.publish(2)
        p = run.wait(lambda p: p.done["detector"] > before, "detector working")
        run.kill("detector")
        run.faults.append(Fault("SIGKILL detector", p.total["detector"] - p.done["detector"]))
        run.start("detector")

    def kill_woken(self, stage: str) -> None:
        """Pause ``stage`` (SIGSTOP) while a chunk reaches its input, wake it, and SIGKILL it
        a few milliseconds later, part-way through the backlog (batches of two)."""
        run = self.run
        proc = run.procs[stage]
        proc.send_signal(signal.SIGSTOP)
        try:
            before = run.progress()
            behind = before.total[stage] - before.done[stage]
            run.publish(2)
            p = run.wait(lambda p: p.total[stage] - p.done[stage] >= behind + 2, f"{stage} backlog")
        finally:
            proc.send_signal(signal.SIGCONT)
        time.sleep(self.rng.uniform(0.0, 0.05))
        run.kill(stage)
        run.faults.append(Fault(f"SIGKILL {stage}", p.total[stage] - p.done[stage]))
        run.start(stage)

    def restart_redis(self) -> None:
        """SIGKILL Redis while match events keep arriving, start it again ~2 s later."""
        run = self.run
        run.wait(lambda _: run.consuming(), "every worker consuming")
        started = time.monotonic()
        run.own.kill_redis()
        before = run.progress().total["sink"]
        run.publish(1)
        p = run.wait(lambda p: p.total["sink"] > before, "events during the Redis outage")
        time.sleep(1.0)  # the sink fails and backs off meanwhile
        run.own.start_redis()
        fault = Fault("Redis SIGKILL + restart", p.total["sink"] - p.done["sink"])
        fault.seconds = time.monotonic() - started
        run.faults.append(fault)

    def restart_broker(self) -> None:
        """Restart the broker while the detector is part-way through a chunk."""
        run = self.run
        run.wait(lambda _: run.consuming(), "every worker consuming")
        before = run.progress().done["detector"]
        run.publish(2)
        p = run.wait(lambda p: p.done["detector"] > before, "detector working")
        fault = Fault("broker restart", p.total["detector"] - p.done["detector"])
        fault.seconds = run.own.restart_kafka()
        run.faults.append(fault)

    def rebalance(self) -> None:
        """A second matcher joins (1 -> 2), decides part of a chunk, and leaves (2 -> 1)."""
        run = self.run
        run.start("matcher-b")
        # The group turns Stable at the broker a moment before matcher-b's assignment callback
        # has run and logged what it took: wait for both.
        run.wait(
            lambda _: run.matcher_members() == 2 and run.consuming(),
            "second matcher in the group, consuming",
        )
        partition = partition_for(run.day.store, PARTITIONS)
        assert partition in run.assigned("matcher-b"), "the store stayed with the first matcher"
        before = run.progress().total["matcher"]
        run.publish(2)
        p = run.wait(lambda p: p.done["matcher"] >= before + 1, "the second matcher deciding")
        run.faults.append(Fault("matchers 1 -> 2", p.total["matcher"] - p.done["matcher"]))
        stop_workers([("matcher-b", run.procs.pop("matcher-b"))])
        run.wait(lambda _: run.matcher_members() == 1, "back to one matcher")
        run.faults.append(Fault("matchers 2 -> 1"))


def run_day(own: PrivateStack, day: Day, tag: str, logs: Path, faults: bool) -> Pipeline:
    """One run of the day on fresh topics; with ``faults``, under the schedule."""
    run = Pipeline(own, own.settings(tag), day, logs)
    for stage in STAGES:
        run.start(stage)
    try:
        publish_members(day.members, run.settings)
        if faults:
            s = Schedule(run)
            steps: list[Callable[[], None]] = [
                s.kill_detector,
                lambda: s.kill_woken("matcher"),
                lambda: s.kill_woken("sink"),
                s.restart_redis,
                s.kill_detector,
                s.rebalance,
                lambda: s.kill_woken("matcher"),
                s.restart_broker,
                lambda: s.kill_woken("sink"),
                s.kill_detector,
                lambda: s.kill_woken("matcher"),
                lambda: s.kill_woken("sink"),
            ]
            for step in steps:
                step()
        run.publish(len(day.frames) - run.sent)
        run.drain()
        run.ended = time.monotonic()
        assert all(run.alive().values()), f"a worker died: {run.alive()}\n{run.log_tail()}"
    finally:
        run.stop()
    return run


@pytest.fixture(scope="module")
def clean(private: PrivateStack, day: Day, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The undisturbed run: the figures every faulted run must give."""
    return run_day(private, day, "clean", tmp_path_factory.mktemp("clean"), faults=False).outcome()


def test_faults_lose_nothing_and_count_nothing_twice(
    private: PrivateStack, day: Day, clean: Outcome, tmp_path: Path
) -> None:
    sightings = len(day.scenario.sightings)
    # The undisturbed run decided every face once, members, returning and new among them.
    assert len(clean.decisions) == clean.events == clean.applied == sightings
    assert {kind for ((_, kind, _, _),) in clean.decisions.values()} == {
        "member",
        "returning",
        "new",
    }
    assert clean.dead_letters == 0

    run = run_day(private, day, "faults", tmp_path, faults=True)
    got = run.outcome()
    print(f"\n{sightings} frames; faults injected:")
    for fault in run.faults:
        print(
            f"  {fault.at - run.began:5.1f} s  {fault.what}: {fault.pending} records in flight"
            + (f", away {fault.seconds:.1f} s" if fault.seconds else "")
        )
    print(f"  {run.ended - run.began:5.1f} s  drained")
    kills = [f for f in run.faults if f.what.startswith("SIGKILL")]
    assert sorted(f.what for f in kills) == sorted(f"SIGKILL {s}" for s in STAGES * 3)
    # Each kind was killed with its input not all committed at least once.
    for stage in STAGES:
        assert any(f.pending for f in kills if f.what.endswith(stage)), (stage, run.faults)

    assert got.stats == clean.stats  # PV, UV, new, returning, members, dwell, per day
    # Each observation has one decision, the undisturbed run's, however often it was emitted.
    assert got.decisions == clean.decisions
    assert got.applied == sightings  # every event applied, once
    assert got.events >= sightings
    assert got.dead_letters == 0  # a fault is waited out, never dead-lettered
