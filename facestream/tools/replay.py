"""One command for a whole replay: stack, workers, members, frames, wait, stats, clean up.

``facestream replay`` starts what is not running (the local Kafka and Redis, one detector,
matcher and sink process each), enrolls the members, publishes the manifest's frames with their
real timestamps, waits until every stage has committed everything its input topic holds (so
every frame has been through the sink), prints the store's stats for the manifest's day, and
stops what it started. With a video instead of a manifest (:func:`run_video`) it publishes the
file's frames stamped ``start`` + their time in the file, and also says how many frames it
published and how many observations the detectors made of them.
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.structs import TopicPartition

from facestream.devstack import stack
from facestream.devstack.workers import spawn_worker, stop_workers
from facestream.runtime import kafka_clients
from facestream.runtime.settings import PipelineSettings
from facestream.runtime.topic_reads import ReadTimeout, read_to_end
from facestream.schemas import MatchEvent, SchemaError, decode
from facestream.schemas.keys import is_progress

if TYPE_CHECKING:
    from facestream.services.sink.stats import StoreStats

log = logging.getLogger(__name__)

STAGES: tuple[tuple[str, str], ...] = (
    ("detector", "frames"),
    ("matcher", "encodings"),
    ("sink", "matches"),
)


class ReplayError(RuntimeError):
    pass


@dataclass(frozen=True)
class Progress:
    """How far each stage is: committed offsets against the end of its input topic."""

    done: dict[str, int]
    total: dict[str, int]

    @property
    def drained(self) -> bool:
        return all(self.done[s] >= self.total[s] for s in self.total)

    def line(self) -> str:
        return "  ".join(f"{s} {self.done[s]}/{self.total[s]}" for s in self.total)


def progress(settings: PipelineSettings, admin: KafkaAdminClient, probe: KafkaConsumer) -> Progress:
    """Committed offsets of each stage's group against its input topic's end offsets."""
    done: dict[str, int] = {}
    total: dict[str, int] = {}
    for stage, kind in STAGES:
        topic = getattr(settings.topics, kind)
        parts = probe.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = probe.end_offsets(tps) if tps else {}
        group = settings.group(stage)
        committed = admin.list_group_offsets({group: None}).get(group, {})
        total[stage] = sum(ends.values())
        done[stage] = sum(min(committed[tp].offset, ends[tp]) for tp in tps if tp in committed)
    return Progress(done, total)


def manifest_day(manifest: Path, timezone: str) -> date:
    """The local date of the manifest's last frame: the day whose stats the replay prints."""
    with manifest.open(newline="") as fh:
        times = [datetime.fromisoformat(row["captured_at"]) for row in csv.DictReader(fh)]
    if not times:
        raise ReplayError(f"{manifest} has no frames")
    return max(times).astimezone(ZoneInfo(timezone)).date()


def _group_active(admin: KafkaAdminClient, group: str) -> bool:
    try:
        described = admin.describe_groups([group])
    except Exception:  # an unknown group is "not running", whatever the client raises
        return False
    return bool(described.get(group, {}).get("members"))


@contextmanager
def workers(
    settings: PipelineSettings, echo: Callable[[str], None], extra_env: dict[str, str]
) -> Iterator[list[str]]:
    """Start a worker process per stage whose consumer group has no live member; stop them
    (SIGTERM, then a bounded wait) on the way out."""
    admin = kafka_clients.admin(settings)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for stage, _ in STAGES:
            if _group_active(admin, settings.group(stage)):
                echo(f"{stage}: already running")
                continue
            proc = spawn_worker(
                stage,
                settings,
                extra_env=extra_env,
                stdout=subprocess.DEVNULL,
                # A worker's log lines would drown the replay's own output, unless debugging.
                stderr=None if log.isEnabledFor(logging.DEBUG) else subprocess.DEVNULL,
            )
            procs.append((stage, proc))
        yield [s for s, _ in procs]
    finally:
        admin.close()
        stop_workers(procs)


class EventTail(threading.Thread):
    """Prints match events as they arrive (from the end of matches.v1 at start)."""

    def __init__(self, settings: PipelineSettings, echo: Callable[[str], None], tz: str) -> None:
        super().__init__(daemon=True)
        self.echo = echo
        self.tz = ZoneInfo(tz)
        self._stop_event = threading.Event()
        self.consumer = kafka_clients.consumer(settings, enable_auto_commit=False)
        topic = settings.topics.matches
        parts = self.consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end()
        for tp in tps:  # resolve the end now, before any frame is published
            self.consumer.position(tp)
        self.seen: set[str] = set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for records in self.consumer.poll(timeout_ms=300).values():
                for r in records:
                    self._show(r.value)

    def _show(self, value: bytes) -> None:
        try:
            ev = decode(MatchEvent, value)
        except SchemaError:
            return
        if ev.event_id in self.seen:  # at-least-once: a replayed event is shown once
            return
        self.seen.add(ev.event_id)
        who = {
            "member": f"member {ev.member_id}",
            "returning": f"returning visitor {ev.face_id}",
            "new": f"new visitor {ev.face_id}",
        }[ev.kind]
        at = ev.captured_at.astimezone(self.tz).strftime("%a %H:%M")
        dist = "" if ev.distance is None else f" (distance {ev.distance:.2f})"
        self.echo(f"  {at} {ev.store_id}/{ev.camera_id}: {who}{dist}")

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self.consumer.close()


class Session:
    """A running local pipeline for one replay: publish members and frames, wait, read back."""

    def __init__(self, settings: PipelineSettings, echo: Callable[[str], None]) -> None:
        self.settings = settings
        self.echo = echo

    def publish_members(self, members: Path) -> None:
        """Enroll the members of ``members`` (Name/*.jpg) into members.v1."""
        from facestream.admin.members import publish_members

        report = publish_members(members, self.settings)
        self.echo(
            f"members: published {len(report.published)} "
            f"({', '.join(report.published)}) from {report.photos} photos"
        )

    def publish_manifest(self, manifest: Path, store: str) -> int:
        """Publish the manifest's frames (``store`` for rows without a store column)."""
        from facestream.runtime.runner import make_producer
        from facestream.services.camera.publisher import (
            frames_from_manifest,
            key_by_from_env,
            publish,
        )

        producer = make_producer(self.settings)
        try:
            sent = publish(
                producer,
                self.settings.topics.frames,
                store,
                frames_from_manifest(manifest),
                key_by=key_by_from_env(),
            )
        finally:
            producer.close()
        self.echo(
            f"published {sent.published} frames of {manifest.name} "
            f"({sent.skipped} unreadable); waiting for the pipeline"
        )
        return sent.published

    def publish_video(self, video: VideoInput, store: str) -> int:
        """Publish the video file's frames (at most ``video.fps`` a second), stamped with
        ``video.start`` plus each frame's time in the file."""
        from facestream.runtime.runner import make_producer
        from facestream.services.camera.publisher import key_by_from_env, publish
        from facestream.services.camera.video import frames_from_video

        frames = frames_from_video(
            str(video.path), video.camera, fps=video.fps, clock=lambda: video.start
        )
        producer = make_producer(self.settings)
        try:
            sent = publish(
                producer, self.settings.topics.frames, store, frames, key_by=key_by_from_env()
            )
        finally:
            producer.close()
        self.echo(
            f"published {sent.published} frames of {video.path.name} (camera {video.camera}, "
            f"{video.fps:g} a second at most); waiting for the pipeline"
        )
        return sent.published

    def observations(self) -> int:
        """Faces now in encodings.v1 (every partition, from its start), the detectors' camera
        progress records not counted."""
        records = read_to_end(
            self.settings,
            self.settings.topics.encodings,
            lambda record: not is_progress(record.headers),
            timeout=60,
        )
        return len(records)

    def wait(self, timeout: float) -> None:
        """Until every stage has committed all of its input (twice in a row)."""
        _wait_drained(self.settings, self.echo, timeout)

    def events(self) -> list[MatchEvent]:
        """Every match event now in matches.v1, partition by partition, in offset order."""
        return [
            decode(MatchEvent, v) for v in read_values(self.settings, self.settings.topics.matches)
        ]


@contextmanager
def session(
    settings: PipelineSettings,
    echo: Callable[[str], None],
    timezones: dict[str, str],
    *,
    show_events: bool = True,
    worker_env: dict[str, str] | None = None,
    keep_stack: bool = False,
) -> Iterator[Session]:
    """Start what is not running (Kafka and Redis, a worker per stage), yield a
    :class:`Session`, and stop what was started on the way out (Kafka and Redis stay up with
    ``keep_stack``, for the dashboard to show the run). Read the stats inside the ``with``: a
    stack this started goes down with its Redis. ``worker_env`` is added to the environment of
    the workers it starts (``FACESTREAM_MATCHER_POLICY_DIR``, say)."""
    cfg = stack.StackConfig.from_env()
    started_stack = False
    if not stack.wait_ready(2.0, config=cfg):
        echo("starting Kafka and Redis (first run installs them)...")
        stack.up(config=cfg)
        started_stack = True
    stack.ensure_topics(prefix=settings.topic_prefix, config=cfg)
    tail: EventTail | None = None
    try:
        # The sink buckets days in each store's time zone; replays must use the plan's.
        extra = {"FACESTREAM_SINK_STORE_TIMEZONES": json.dumps(timezones), **(worker_env or {})}
        with workers(settings, echo, extra) as started:
            if started:
                echo(f"started workers: {', '.join(started)}")
            if show_events:
                zone = next(iter(timezones.values()), "UTC")
                tail = EventTail(settings, echo, zone)
                tail.start()
            yield Session(settings, echo)
    finally:
        if tail is not None:
            tail.stop()
        if started_stack and not keep_stack:
            stack.down(config=cfg)


def run(
    *,
    store: str,
    members: Path | None,
    manifest: Path,
    settings: PipelineSettings,
    timezone: str,
    echo: Callable[[str], None],
    show_events: bool = True,
    timeout: float = 900.0,
) -> StoreStats:
    """The whole replay; returns the store's stats for the manifest's day."""
    from facestream.services.sink.stats import store_stats

    day = manifest_day(manifest, timezone)
    with session(settings, echo, {store: timezone}, show_events=show_events) as s:
        if members is not None:
            s.publish_members(members)
        s.publish_manifest(manifest, store)
        s.wait(timeout)
        return store_stats(store, day, settings)


@dataclass(frozen=True)
class VideoInput:
    """A video file to replay as one camera's frames."""

    path: Path
    camera: str
    start: datetime
    """When the video's first frame was taken (aware): frame times count from it."""
    fps: float = 5.0
    """At most this many frames of each second of video are published."""


@dataclass(frozen=True)
class VideoReplay:
    """What a video replay printed: the store's stats for the day it started, the frames
    published and the observations (faces) the detectors made of them."""

    stats: StoreStats
    frames: int
    observations: int

    def as_dict(self) -> dict[str, object]:
        return {**self.stats.as_dict(), "frames": self.frames, "observations": self.observations}


def run_video(
    *,
    store: str,
    members: Path | None,
    video: VideoInput,
    settings: PipelineSettings,
    timezone: str,
    echo: Callable[[str], None],
    show_events: bool = True,
    timeout: float = 900.0,
) -> VideoReplay:
    """The whole replay of a video; the stats are of the store's day in which it started.
    ``observations`` counts the records ``encodings.v1`` gained meanwhile: anything else that
    publishes observations to the same topics at the same time is counted too."""
    from facestream.services.sink.stats import store_stats

    if video.start.tzinfo is None:
        raise ReplayError("the video's start time needs a UTC offset (2026-12-03T10:00:00+01:00)")
    if video.fps <= 0:
        raise ReplayError("--fps must be positive")
    day = video.start.astimezone(ZoneInfo(timezone)).date()
    with session(settings, echo, {store: timezone}, show_events=show_events) as s:
        if members is not None:
            s.publish_members(members)
        before = s.observations()
        frames = s.publish_video(video, store)
        s.wait(timeout)
        return VideoReplay(store_stats(store, day, settings), frames, s.observations() - before)


def read_values(settings: PipelineSettings, topic: str, timeout: float = 60.0) -> list[bytes]:
    """The values of every record now in ``topic`` (tombstones left out), partition by
    partition, in offset order."""
    try:
        records = read_to_end(settings, topic, lambda r: bool(r.value), timeout)
    except ReadTimeout as exc:
        raise ReplayError(str(exc)) from None
    return [r.value for r in sorted(records, key=lambda r: (r.partition, r.offset))]


def _wait_drained(settings: PipelineSettings, echo: Callable[[str], None], timeout: float) -> None:
    admin = kafka_clients.admin(settings)
    probe = kafka_clients.consumer(settings, enable_auto_commit=False)
    deadline = time.monotonic() + timeout
    last_line = ""
    stable = 0
    try:
        while time.monotonic() < deadline:
            p = progress(settings, admin, probe)
            if p.line() != last_line:
                echo(f"  progress: {p.line()}")
                last_line = p.line()
            # Twice in a row: a stage's output lands in the next topic before it commits.
            stable = stable + 1 if p.drained else 0
            if stable >= 2:
                return
            time.sleep(1.0)
        raise ReplayError(f"the pipeline did not drain in {timeout:.0f}s: {last_line}")
    finally:
        probe.close()
        admin.close()
