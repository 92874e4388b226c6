"""What the dead-letter topics hold of a person, from real dead letters: a frame of a real photo,
an observation with a real encoding and a match event naming a FaceId, each poison, each sent
through the real stage (detector, matcher, sink processes) on the real broker. By default no
dead letter names the person or carries their image or encoding; with
FACESTREAM_DLQ_KEEP_PAYLOAD=true two of them name the FaceId, and the audit and the erasure say
so, with the time retention deletes them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from facestream.admin.audit import audit
from facestream.admin.erasure import erase
from facestream.core.gallery import Gallery, Identity
from facestream.core.photos import image_files
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.runtime.topics import MATCHES_DLQ_RETENTION_MS
from facestream.schemas import FrameMeta, derived_id
from tests.kafka_fixtures import pipeline_env, read_topic
from tests.services.matcher.test_matcher import (
    ROOT,
    clean_redis,
    encode_people,
    observation,
)

STORE = "s1"
FACE_ID = derived_id("face", "v1:0")
"""The FaceId the poison observation (``v1:0``) would mint; the poison match event names it."""


@pytest.fixture(autouse=True)
def _redis_keys(pipeline: PipelineSettings) -> Iterator[None]:
    yield
    clean_redis(pipeline)


def poison(pipeline: PipelineSettings, lfw: Path) -> dict[str, bytes]:
    """Publish one poison record per stage; the secret each holds, by topic."""
    photo = image_files(lfw / "Carl_Reiner")[0]
    [encoding] = encode_people(lfw, {"Carl_Reiner": 1})["Carl_Reiner"]
    obs = observation(STORE, "v1:0", encoding)
    # A frame of a version no detector knows, from a real photo of the person.
    meta = FrameMeta(frame_id="v1", store_id=STORE, camera_id="c1", captured_at=datetime.now(UTC))
    headers = [(k, b"9" if k == "v" else v) for k, v in meta.to_headers()]
    image = photo.read_bytes()
    # A match event naming the FaceId, of a version no sink knows.
    event = {
        "v": 9,
        "event_id": derived_id("match", "v1:0"),
        "kind": "new",
        "face_id": FACE_ID,
        "store_id": STORE,
        "camera_id": "c1",
    }
    topics = pipeline.topics
    producer = make_producer(pipeline)
    try:
        sent = [
            producer.send(topics.frames, image, key=STORE.encode(), headers=headers),
            # The observation's store is s1, its key s2: the matcher refuses it.
            producer.send(topics.encodings, obs.to_bytes(), key=b"s2"),
            producer.send(topics.matches, json.dumps(event).encode(), key=STORE.encode()),
        ]
        for future in sent:
            future.get(timeout=20)
    finally:
        producer.close(timeout=5)
    return {
        topics.dlq(topics.frames): image,
        topics.dlq(topics.encodings): obs.encoding.encode(),
        topics.dlq(topics.matches): FACE_ID.encode(),
    }


def run_stages(pipeline: PipelineSettings, keep: bool) -> None:
    """Run the detector, the matcher and the sink until each has been idle a few seconds."""
    env = {**pipeline_env(pipeline), "FACESTREAM_DLQ_KEEP_PAYLOAD": str(keep).lower()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", f"facestream.services.{stage}", "--max-idle-seconds", "4"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for stage in ("detector", "matcher", "sink")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]


@pytest.mark.timeout(300)
def test_by_default_no_dead_letter_holds_anything_of_the_person(
    pipeline: PipelineSettings, lfw: Path, tmp_path: Path
) -> None:
    secrets = poison(pipeline, lfw)
    run_stages(pipeline, keep=False)
    subject = f"{STORE}/{FACE_ID}"
    for topic, secret in secrets.items():
        (record,) = read_topic(pipeline, topic)
        # Key: the source record's (a store id); headers: none; value: a DeadLetter with the
        # source headers (a frame's: ids, store, camera, time) and no payload.
        assert record.key in (STORE.encode(), b"s2"), record
        assert not record.headers
        letter = json.loads(record.value)
        assert letter["payload_b64"] == "" and letter["payload_truncated"] is True
        assert secret not in record.value and FACE_ID.encode() not in record.value
        assert "value withheld" in letter["error"]
    frame = json.loads(read_topic(pipeline, pipeline.topics.dlq(pipeline.topics.frames))[0].value)
    assert set(frame["source_headers"]) == {
        "v",
        "frame_id",
        "store_id",
        "camera_id",
        "captured_at",
        "content_type",
    }
    found = audit(subject, pipeline)
    dlq = [p for p in found.places if p.place.endswith(".dlq")]
    assert [(p.readable, p.live) for p in dlq] == [(0, False)] * 3
    assert found.gone
    # The command line: the gallery file is erased too, each dead-letter topic reported.
    gallery = tmp_path / "api-gallery.npz"
    api = Gallery()
    api.add(Identity(FACE_ID, ""), encode_people(lfw, {"Carl_Reiner": 1})["Carl_Reiner"])
    api.save(gallery)
    command = [str(Path(sys.executable).parent / "facestream"), "erase", subject]
    env = pipeline_env(pipeline)
    done = subprocess.run(
        [*command, "--gallery", str(gallery), "--timeout", "5", "--json"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    erased = json.loads(done.stdout)
    assert erased["galleries"] == [{"path": str(gallery), "samples_removed": 1}]
    assert FACE_ID not in Gallery.load(gallery)
    assert [(d["naming"], d["payloads"], d["gone_by"]) for d in erased["dead_letters"]] == [
        (0, 0, None)
    ] * 3
    text = subprocess.run(
        [*command, "--gallery", str(gallery), "--cut-streams"], env=env, capture_output=True
    )
    assert text.returncode == 0, text.stderr[-2000:]
    lines = text.stdout.decode().splitlines()
    assert f"gallery {gallery}: not in it" in lines
    # The detector read the one frame: it goes; the dead-letter topics keep no payload: kept.
    assert f"cut {pipeline.topics.frames}: 1 records deleted over 4 partitions" in lines
    assert not any(line.startswith("cut ") and line.split()[1].endswith(".dlq:") for line in lines)
    assert (
        f"{pipeline.topics.dlq(pipeline.topics.matches)}: no dead letter names the subject or "
        "keeps a payload"
    ) in lines


@pytest.mark.timeout(300)
def test_kept_payloads_name_the_person_and_the_audit_finds_them(
    pipeline: PipelineSettings, lfw: Path
) -> None:
    poison(pipeline, lfw)
    run_stages(pipeline, keep=True)
    subject = f"{STORE}/{FACE_ID}"
    started = datetime.now(UTC)
    erased = erase(subject, pipeline, timeout=5)
    assert erased.dead_letters is not None
    by_topic = {d.topic: d for d in erased.dead_letters}
    topics = pipeline.topics
    # The image cannot be attributed by reading; the observation derives the FaceId; the
    # match event names it.
    assert by_topic[topics.dlq(topics.frames)].naming == 0
    assert by_topic[topics.dlq(topics.frames)].payloads == 1
    assert by_topic[topics.dlq(topics.encodings)].naming == 1
    matches = by_topic[topics.dlq(topics.matches)]
    assert (matches.naming, matches.payloads) == (1, 1)
    # Deleted at the latest retention.ms + segment.ms (7 + 1 days) after it was written.
    lifetime = timedelta(milliseconds=MATCHES_DLQ_RETENTION_MS) + timedelta(days=1)
    assert matches.gone_by is not None
    assert timedelta(0) < started + lifetime - matches.gone_by < timedelta(minutes=5)
    assert json.loads(json.dumps(erased.as_dict()))["dead_letters"][2]["naming"] == 1

    # The audit reports them as readable, not live: the erasure holds, nothing is gone yet.
    command = [str(Path(sys.executable).parent / "facestream"), "audit", subject]
    done = subprocess.run(command, env=pipeline_env(pipeline), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert b"dead letters naming the subject: 1," in done.stdout
    assert b": erased" in done.stdout
    found = audit(subject, pipeline)
    assert found.erased and not found.gone

    # Cutting the streams empties the dead-letter topics that keep payloads, and deletes from
    # the stream topics what every stage has read, but the last minute of match events.
    cut = erase(subject, pipeline, timeout=5, cut=True)
    assert cut.streams is not None
    by_cut = {c.topic: (c.deleted, c.held, c.held_by) for c in cut.streams}
    assert by_cut == {
        topics.frames: (1, 0, ()),
        topics.encodings: (1, 0, ()),
        topics.matches: (0, 1, ()),
        **{topics.dlq(t): (1, 0, ()) for t in (topics.frames, topics.encodings, topics.matches)},
    }
    streams = (topics.frames, topics.encodings, topics.matches)
    assert [len(read_topic(pipeline, t)) for t in streams] == [0, 0, 1]
    assert [len(read_topic(pipeline, topics.dlq(t))) for t in streams] == [0, 0, 0]
    # The audit counts the same: nothing in the dead-letter topics, one match event from before
    # the erasure, which retention deletes.
    after = {p.place: p.readable for p in audit(subject, pipeline).places}
    assert [after[t] for t in streams] == [0, 0, 1]
    assert [after[topics.dlq(t)] for t in streams] == [0, 0, 0]
