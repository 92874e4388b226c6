"""An erasure stays effective after a replay: a visitor is seen (minted, then returning),
erased, and the very same ``encodings.v1`` records are published again, through a real matcher
and a real sink process on the real broker and Redis, with encodings of real LFW photos."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from facestream.admin.erasure import erase
from facestream.core.engine import Encoding
from facestream.devstack.workers import spawn_worker, stop_workers
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import MatchEvent, derived_id
from facestream.schemas.keys import partition_for
from facestream.services.sink.store import StoreKeys, traces
from tests.kafka_fixtures import PARTITIONS, pipeline_env, read_topic
from tests.services.matcher.test_matcher import (
    clean_redis,
    encode_people,
    events,
    observation,
    produce,
    read_all,
    start_matcher,
)

STORE = "s1"


@pytest.fixture(autouse=True)
def _redis_keys(pipeline: PipelineSettings) -> Iterator[None]:
    yield
    clean_redis(pipeline)


@pytest.fixture(scope="module")
def visitor(lfw: Path) -> list[Encoding]:
    """Two photos of one person: the first mints a FaceId, the second returns to it."""
    return encode_people(lfw, {"Carl_Reiner": 2})["Carl_Reiner"]


@dataclass(frozen=True)
class Replayed:
    """The scenario's outcome, for the tests to judge."""

    face_id: str
    first: list[MatchEvent]
    replayed: list[MatchEvent]
    audit_exit: int
    audit_json: dict[str, Any]
    traces: dict[str, int]
    """What Redis holds of the erased FaceId after the replay."""
    visits: dict[str, int]
    """Visit histories in Redis of each FaceId the replayed events name."""
    minted_after_erasure: list[str]
    """``identities.v1`` keys given a value after the erasure's tombstone."""


def applied_up_to(client: redis.Redis, settings: PipelineSettings, offset: int) -> bool:
    """Whether the sink handled the store's match events up to ``offset`` (applied, dropped as
    a copy or as an erased person's: every one moves the mark)."""
    field = f"{settings.topics.matches}:{partition_for(STORE, PARTITIONS)}"
    mark = client.hget(StoreKeys(settings.redis_prefix, STORE).offsets, field)
    return mark is not None and int(mark) >= offset


def wait_for(check: Any, what: str, within: float = 40.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def see_erase_replay(pipeline: PipelineSettings, visitor: list[Encoding], log: Path) -> Replayed:
    """Run the scenario with a matcher and a sink process; stop both cleanly."""
    client = redis.Redis.from_url(pipeline.redis_url)
    matcher = start_matcher(pipeline, idle=300, FACESTREAM_MATCHER_MATCHER_ID="m1")
    with log.open("ab") as out:
        sink = spawn_worker("sink", pipeline, stdout=out, stderr=out)
    try:
        sightings = [
            observation(STORE, f"v{i}:0", vector, seconds=60 * i)
            for i, vector in enumerate(visitor, 1)
        ]
        produce(
            pipeline, pipeline.topics.encodings, [(STORE.encode(), o.to_bytes()) for o in sightings]
        )
        first = events(read_all(pipeline, pipeline.topics.matches, 2, timeout=60))
        assert [e.kind for e in first] == ["new", "returning"], first
        face_id = first[0].face_id
        assert face_id == derived_id("face", "v1:0") and first[1].face_id == face_id
        wait_for(lambda: applied_up_to(client, pipeline, 1), "the sink")
        assert traces(face_id, pipeline, stores=[STORE])["visits"] == 1

        subject = f"{STORE}/{face_id}"
        erased = erase(subject, pipeline, timeout=20)
        assert erased.confirmed and erased.acknowledged == ("m1",), erased
        tombstone = erased.tombstone

        # The replay: the same records, byte for byte, published again.
        originals = read_topic(pipeline, pipeline.topics.encodings)
        assert len(originals) == 2
        produce(pipeline, pipeline.topics.encodings, [(r.key, r.value) for r in originals])
        every = events(read_all(pipeline, pipeline.topics.matches, 4, timeout=60))
        assert len(every) == 4, every
        wait_for(lambda: applied_up_to(client, pipeline, 3), "the sink to handle the replay")
        # The matcher writes to identities.v1 before the match event it goes with.
        after = [
            r.key.decode()
            for r in read_topic(pipeline, pipeline.topics.identities)
            if r.partition == tombstone.partition
            and r.offset > tombstone.offset
            and r.value is not None
        ]
        command = [str(Path(sys.executable).parent / "facestream"), "audit", subject, "--json"]
        done = subprocess.run(command, env=pipeline_env(pipeline), capture_output=True, timeout=120)
        assert done.stdout, done.stderr[-2000:]
        return Replayed(
            face_id=face_id,
            first=first,
            replayed=every[2:],
            audit_exit=done.returncode,
            audit_json=json.loads(done.stdout),
            traces=traces(face_id, pipeline, stores=[STORE]),
            visits={
                e.face_id: traces(e.face_id, pipeline, stores=[STORE])["visits"]
                for e in every[2:]
                if e.face_id is not None
            },
            minted_after_erasure=after,
        )
    finally:
        matcher.send_signal(signal.SIGTERM)
        stop_workers([("sink", sink)])
        try:
            matcher.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            matcher.kill()
        client.close()


@pytest.mark.timeout(300)
def test_an_erased_face_id_does_not_come_back_after_a_replay(
    pipeline: PipelineSettings, visitor: list[Encoding], tmp_path: Path
) -> None:
    run = see_erase_replay(pipeline, visitor, tmp_path / "sink.log")
    # The replayed observation that minted the FaceId gets its event, and mints nothing.
    assert run.replayed[0].event_id == run.first[0].event_id
    assert f"{STORE}/{run.face_id}" not in run.minted_after_erasure
    # Nothing live anywhere the audit looks: identities.v1, Redis, the dead-letter topics.
    assert run.audit_exit == 0, run.audit_json
    assert run.audit_json["erased"] is True
    places = {p["place"]: p for p in run.audit_json["places"]}
    assert places["redis"]["readable"] == 0
    # The sink's figures for the face did not come back: no visit, no day set; the markers
    # that dropped the replayed events stay.
    assert run.traces["visits"] == run.traces["day_sets"] == run.traces["arrivals"] == 0
    assert run.traces["erasure_markers"] > 0
    # Nor did any figure of the replay: every replayed event was dropped (the erased FaceId's
    # by its marker, the others as copies of events applied before).
    assert set(run.visits.values()) == {0}, run.visits


@pytest.mark.timeout(300)
@pytest.mark.xfail(
    strict=True,
    reason=(
        "matcher: the replayed second sighting, first decided 'returning' to the erased "
        "FaceId, finds no visitor any more and mints a new FaceId (derived from its own "
        "observation id) whose identities.v1 record holds the erased person's encoding. The "
        "matcher would need to remember, for the retention of encodings.v1, which observations "
        "it decided as each FaceId, and on a replay of one decided as an erased FaceId emit "
        "the event without minting or learning"
    ),
)
def test_a_replay_does_not_bring_the_erased_person_back_under_a_new_face_id(
    pipeline: PipelineSettings, visitor: list[Encoding], tmp_path: Path
) -> None:
    run = see_erase_replay(pipeline, visitor, tmp_path / "sink.log")
    assert [e.face_id for e in run.replayed] == [run.face_id, run.face_id]
    assert run.minted_after_erasure == []
