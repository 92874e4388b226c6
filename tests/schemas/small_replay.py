"""A small replay on the real broker and Redis, for the contract tests: every kind of decision
(member, new, returning) and a dead letter on every DLQ topic, in a few dozen seconds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from facestream.core.engine import FaceEngine
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import FrameMeta
from facestream.schemas.keys import frame_key
from facestream.tools import replay, simulate
from facestream.tools.store_eval import fresh_settings

# One member, one stranger who comes twice, one who comes once: member, new and returning.
PLAN = simulate.Plan(members=1, returning_same_day=1, returning_later=0, once=1, days=1, seed=3)
JUNK = b"this is not what the topic carries"


@dataclass(frozen=True)
class SmallReplay:
    settings: PipelineSettings
    """The replay's topics, consumer groups and Redis keys (all of its own)."""
    store: str
    timezone: str
    sightings: int


def run_small_replay(
    images: Path, engine: FaceEngine, live: PipelineSettings, work: Path, label: str
) -> SmallReplay:
    """Replay :data:`PLAN` through every stage, plus one record each stage must dead-letter."""
    scenario = simulate.build(images, PLAN, engine)
    members, manifest, _ = scenario.write(work)
    store, timezone = scenario.stores[0].store_id, scenario.stores[0].timezone
    settings = fresh_settings(live, label)
    lines: list[str] = []
    with replay.session(settings, lines.append, {store: timezone}, show_events=False) as s:
        s.publish_members(members)
        s.publish_manifest(manifest, store)
        producer = make_producer(settings)
        try:
            meta = FrameMeta(
                frame_id="junk-frame",
                store_id=store,
                camera_id="entrance",
                captured_at=datetime(2026, 11, 27, 12, tzinfo=UTC),
            )
            key = store.encode()
            camera_key = frame_key(store, meta.camera_id).encode()
            producer.send(settings.topics.frames, JUNK, camera_key, meta.to_headers())
            producer.send(settings.topics.encodings, JUNK, key)
            producer.send(settings.topics.matches, JUNK, key)
            producer.flush(30)
        finally:
            producer.close()
        s.wait(300)
    return SmallReplay(settings, store, timezone, len(scenario.sightings))
