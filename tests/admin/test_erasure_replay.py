"""An erasure stays effective after a replay: a visitor (minted, then returning) or a member is
seen twice, erased, and the very same ``encodings.v1`` records are published again, through a
real matcher and a real sink process on the real broker and Redis, with encodings of real LFW
photos."""

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
from facestream.schemas import MatchEvent, MemberRecord, derived_id
from facestream.schemas.keys import partition_for
from facestream.services.sink.store import StoreKeys, traces
from tests.kafka_fixtures import PARTITIONS, pipeline_env, read_topic
from tests.services.matcher.test_matcher import (
    T0,
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
def people(lfw: Path) -> dict[str, list[Encoding]]:
    """Photos of two people: a visitor whose first sighting mints a FaceId and whose second
    returns to it, and a member enrolled from two photos and seen in two others."""
    return encode_people(lfw, {"Carl_Reiner": 2, "Gordon_Brown": 5})


@dataclass(frozen=True)
class Replayed:
    """The scenario's outcome, for the tests to judge."""

    subject: str
    """What was erased: the member id, or ``store/face_id``."""
    person: str
    """The member id or the FaceId, as the sink names them."""
    first: list[MatchEvent]
    replayed: list[MatchEvent]
    audit_exit: int
    audit_json: dict[str, Any]
    traces: dict[str, int]
    """What Redis holds of the erased person after the replay."""
    visits: dict[str, int]
    """Visit histories in Redis of each FaceId the replayed events name."""
    minted_after_erasure: list[str]
    """``identities.v1`` keys given a value after the erasure's tombstone (for a member, after
    the first sightings were decided: a member is never minted)."""


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


def see_erase_replay(
    pipeline: PipelineSettings,
    seen: list[Encoding],
    log: Path,
    *,
    member: tuple[str, list[Encoding]] | None = None,
) -> Replayed:
    """See the person in each of ``seen``, erase them (the visitor, or the member enrolled as
    ``member`` = (id, encodings)), publish the same ``encodings.v1`` records again; a matcher
    and a sink process run throughout and are stopped cleanly."""
    client = redis.Redis.from_url(pipeline.redis_url)
    if member is not None:
        record = MemberRecord(member_id=member[0], encodings=member[1], enrolled_at=T0)
        produce(pipeline, pipeline.topics.members, [(member[0].encode(), record.to_bytes())])
    matcher = start_matcher(pipeline, idle=300, FACESTREAM_MATCHER_MATCHER_ID="m1")
    with log.open("ab") as out:
        sink = spawn_worker("sink", pipeline, stdout=out, stderr=out)
    try:
        sightings = [
            observation(STORE, f"v{i}:0", vector, seconds=60 * i)
            for i, vector in enumerate(seen, 1)
        ]
        produce(
            pipeline, pipeline.topics.encodings, [(STORE.encode(), o.to_bytes()) for o in sightings]
        )
        first = events(read_all(pipeline, pipeline.topics.matches, 2, timeout=60))
        if member is None:
            assert [e.kind for e in first] == ["new", "returning"], first
            face_id = first[0].face_id
            assert face_id == derived_id("face", "v1:0") and first[1].face_id == face_id
            subject, named = f"{STORE}/{face_id}", face_id
        else:
            assert [(e.kind, e.member_id) for e in first] == [("member", member[0])] * 2, first
            subject = named = member[0]
        wait_for(lambda: applied_up_to(client, pipeline, 1), "the sink")
        assert traces(named, pipeline, stores=[STORE])["visits"] == 1
        identities_before = len(read_topic(pipeline, pipeline.topics.identities))

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
        identities = read_topic(pipeline, pipeline.topics.identities)
        if member is None:
            after = [
                r.key.decode()
                for r in identities
                if r.partition == tombstone.partition
                and r.offset > tombstone.offset
                and r.value is not None
            ]
        else:
            after = [r.key.decode() for r in identities[identities_before:] if r.value is not None]
        command = [str(Path(sys.executable).parent / "facestream"), "audit", subject, "--json"]
        done = subprocess.run(command, env=pipeline_env(pipeline), capture_output=True, timeout=120)
        assert done.stdout, done.stderr[-2000:]
        return Replayed(
            subject=subject,
            person=named,
            first=first,
            replayed=every[2:],
            audit_exit=done.returncode,
            audit_json=json.loads(done.stdout),
            traces=traces(named, pipeline, stores=[STORE]),
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


def assert_nothing_came_back(run: Replayed) -> None:
    """Nothing live anywhere the audit looks (identities.v1 or members.v1, Redis, the
    dead-letter topics), and no figure of the replay in Redis."""
    assert run.minted_after_erasure == []
    assert run.audit_exit == 0, run.audit_json
    assert run.audit_json["erased"] is True
    places = {p["place"]: p for p in run.audit_json["places"]}
    assert places["redis"]["readable"] == 0
    # The sink's figures for the person did not come back: no visit, no day set; the markers
    # that dropped the replayed events stay.
    assert run.traces["visits"] == run.traces["day_sets"] == run.traces["arrivals"] == 0
    assert run.traces["erasure_markers"] > 0
    # Nor did any figure of the replay: every replayed event was dropped (the erased person's
    # by its marker).
    assert set(run.visits.values()) <= {0}, run.visits


@pytest.mark.timeout(300)
def test_a_replay_after_erasing_a_visitor_brings_nobody_back(
    pipeline: PipelineSettings, people: dict[str, list[Encoding]], tmp_path: Path
) -> None:
    run = see_erase_replay(pipeline, people["Carl_Reiner"], tmp_path / "sink.log")
    # Each replayed observation gets its decision again, as it was published: the minting
    # one and the returning one, not a new FaceId holding the person's encoding.
    assert run.replayed == run.first
    assert_nothing_came_back(run)


@pytest.mark.timeout(300)
def test_a_replay_after_erasing_a_member_brings_nobody_back(
    pipeline: PipelineSettings, people: dict[str, list[Encoding]], tmp_path: Path
) -> None:
    """Decided anew, the replayed sightings would find no member any more and mint a visitor
    holding the member's encoding."""
    gordon = people["Gordon_Brown"]
    enrolled, seen = [gordon[0], gordon[2]], [gordon[1], gordon[4]]
    run = see_erase_replay(pipeline, seen, tmp_path / "sink.log", member=("m-gb", enrolled))
    assert run.replayed == run.first
    assert_nothing_came_back(run)
