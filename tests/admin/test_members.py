"""Members on the real topics: enroll a folder, recognise a member, erase members and visitors,
and audit what every place still holds of them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kafka.errors import TopicAuthorizationFailedError

from facestream.admin.audit import audit
from facestream.admin.erasure import erase
from facestream.admin.members import publish_members
from facestream.core.engine import MODEL_VERSION, Encoding
from facestream.core.gallery import Gallery, Identity
from facestream.core.photos import encode_many, image_files
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import MatchEvent, MemberRecord, decode, derived_id
from facestream.schemas.keys import partition_for
from facestream.services.matcher.presence import live_matchers
from tests.kafka_fixtures import PARTITIONS, pipeline_env
from tests.services.matcher.test_matcher import (
    clean_redis,
    events,
    observation,
    produce,
    read_all,
    start_matcher,
)


@pytest.fixture(autouse=True)
def _redis_keys(pipeline: PipelineSettings) -> Iterator[None]:
    yield
    clean_redis(pipeline)


@pytest.fixture(scope="module")
def folder(lfw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two members with three photos each, and one folder whose name is not a valid id."""
    root = tmp_path_factory.mktemp("members")
    for name in ("Hugo_Chavez", "Gray_Davis"):
        (root / name).mkdir()
        for photo in image_files(lfw / name)[:3]:
            (root / name / photo.name).symlink_to(photo)
    (root / "not valid!").mkdir()
    photo = image_files(lfw / "Gray_Davis")[3]
    (root / "not valid!" / photo.name).symlink_to(photo)
    return root


@pytest.fixture(scope="module")
def probe(lfw: Path) -> Encoding:
    """A fourth photo of Hugo Chavez, not among the enrolled ones."""
    [encoded] = encode_many([image_files(lfw / "Hugo_Chavez")[3]], workers=1)
    face = next(f for f in encoded.faces if f.encoding is not None)
    assert face.encoding is not None
    return face.encoding


def wait_for_events(settings: PipelineSettings, count: int) -> list[MatchEvent]:
    got = events(read_all(settings, settings.topics.matches, count, timeout=30))
    assert len(got) == count, got
    return got


def test_enroll_recognise_and_erase(
    pipeline: PipelineSettings, folder: Path, probe: Encoding, tmp_path: Path
) -> None:
    report = publish_members(folder, pipeline, workers=1)
    assert report.published == ("Gray_Davis", "Hugo_Chavez")
    assert report.enrollment.counts == {"enrolled": 7}
    assert list(report.invalid) == ["not valid!"]
    records = read_all(pipeline, pipeline.topics.members, 2)
    hugo = decode(MemberRecord, next(r.value for r in records if r.key == b"Hugo_Chavez"))
    assert (hugo.name, len(hugo.encodings)) == ("Hugo Chavez", 3)
    assert hugo.model_version == MODEL_VERSION  # the encoder the matchers check it against

    matcher = start_matcher(pipeline, idle=60, FACESTREAM_MATCHER_MATCHER_ID="m1")
    try:
        encodings = pipeline.topics.encodings

        def see(obs_id: str, count: int) -> MatchEvent:
            produce(pipeline, encodings, [(b"s1", observation("s1", obs_id, probe).to_bytes())])
            return wait_for_events(pipeline, count)[-1]

        first = see("f1:0", 1)
        assert (first.kind, first.member_id) == ("member", "Hugo_Chavez")

        # Before: the member is live in members.v1 and in an API gallery file.
        gallery_file = tmp_path / "api-gallery.fsg"
        api = Gallery()
        api.add(Identity("Hugo_Chavez", "Hugo Chavez"), probe)
        api.save(gallery_file)
        before = audit("Hugo_Chavez", pipeline, [gallery_file])
        places = {p.place: p for p in before.places}
        assert not before.erased
        assert places[pipeline.topics.members].live
        assert places[str(gallery_file)].live
        assert not places[pipeline.topics.member_samples].live

        erased = erase("Hugo_Chavez", pipeline, timeout=20, galleries=[gallery_file])
        assert erased.confirmed, erased
        assert (erased.kind, erased.acknowledged) == ("member", ("m1",))
        assert erased.tombstone.topic == pipeline.topics.members
        assert isinstance(erased.visits_purged, int)
        assert [(g.path, g.samples_removed) for g in erased.galleries] == [(gallery_file, 1)]
        assert "Hugo_Chavez" not in Gallery.load(gallery_file)

        # After: no topic holds the member as current state; the enrolled record stays
        # readable until the topic is compacted, and the audit says so.
        after = audit("Hugo_Chavez", pipeline, [gallery_file])
        places = {p.place: p for p in after.places}
        assert after.erased and not after.gone
        assert places[pipeline.topics.members].readable == 1
        assert "tombstoned" in places[pipeline.topics.members].detail
        assert "tombstoned" in places[pipeline.topics.member_samples].detail
        assert not places["redis"].live
        assert places[str(gallery_file)].detail == "not in the gallery"
        assert after.acknowledged_by == ("m1",)
        command = [str(Path(sys.executable).parent / "facestream"), "audit", "Hugo_Chavez"]
        env = pipeline_env(pipeline)
        ok = subprocess.run(
            [*command, "--gallery", str(gallery_file), "--json"],
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert json.loads(ok.stdout)["erased"] is True

        second = see("f2:0", 2)
        assert (second.kind, second.member_id) == ("new", None)
        assert second.face_id == derived_id("face", "f2:0")

        # The visitor minted from the erased member's face is erased in turn.
        subject = f"s1/{second.face_id}"
        gone = erase(subject, pipeline, timeout=20)
        assert gone.confirmed and gone.acknowledged == ("m1",), gone
        assert gone.tombstone.partition == partition_for("s1", PARTITIONS)
        visitor = audit(subject, pipeline)
        assert visitor.kind == "visitor" and visitor.erased
        [identities] = [p for p in visitor.places if p.place == pipeline.topics.identities]
        assert identities.readable == 1 and "tombstoned" in identities.detail
        third = see("f3:0", 3)
        assert (third.kind, third.face_id) == ("new", derived_id("face", "f3:0"))
    finally:
        matcher.send_signal(signal.SIGTERM)
        try:
            _, err = matcher.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            matcher.kill()
            raise
    assert matcher.returncode == 0, err[-3000:]
    # A clean stop leaves the heartbeat set: later erasures do not wait for it.
    client = redis.Redis.from_url(pipeline.redis_url)
    assert "m1" not in live_matchers(client, pipeline.redis_prefix)


def test_erase_with_no_live_matcher(pipeline: PipelineSettings) -> None:
    started = time.monotonic()
    result = erase("s7/F-nobody", pipeline, timeout=5)
    assert time.monotonic() - started < 5
    assert (result.kind, result.matchers, result.confirmed) == ("visitor", (), True)
    assert result.tombstone.partition == partition_for("s7", PARTITIONS)
    # The JSON form (`facestream erase --json`) keeps its keys, in their order.
    assert list(result.as_dict()) == [
        "subject",
        "kind",
        "tombstone",
        "matchers",
        "acknowledged",
        "pending",
        "confirmed",
        "visits_purged",
        "galleries",
        "dead_letters",
        "streams",
        "cut_error",
        "snapshots_removed",
    ]
    assert result.as_dict()["streams"] is None  # no cut was asked for


def test_a_failed_cut_is_reported_and_the_erasure_stands(
    pipeline: PipelineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker refuses the cut (a missing permission, say): the tombstone is written, the
    erasure says why the streams were not cut, and the command exits 1."""
    import facestream.admin.erasure as erasure

    def refused(*_: object, **__: object) -> None:
        raise TopicAuthorizationFailedError("not allowed to delete records")

    monkeypatch.setattr(erasure, "cut_streams", refused)
    result = erase("s7/F-cut", pipeline, timeout=5, cut=True)
    assert result.tombstone.topic == pipeline.topics.identities
    assert result.streams is None
    assert result.cut_error is not None and "not allowed to delete records" in result.cut_error
    assert result.as_dict()["cut_error"] == result.cut_error
    assert result.as_dict()["tombstone"] == {
        "topic": pipeline.topics.identities,
        "partition": result.tombstone.partition,
        "offset": result.tombstone.offset,
    }


def test_erase_a_member_where_member_samples_do_not_exist(pipeline: PipelineSettings) -> None:
    """A deployment older than ``member-samples.v1``: the member's tombstone is written and
    the erasure completes at once, instead of the producer waiting a minute for a topic that
    will never exist and failing after the tombstone."""
    from facestream.runtime import kafka_clients

    admin = kafka_clients.admin(pipeline)
    try:
        admin.delete_topics([pipeline.topics.member_samples], timeout_ms=10_000)
    finally:
        admin.close()
    started = time.monotonic()
    result = erase("M-old", pipeline, timeout=5)
    assert time.monotonic() - started < 30
    assert (result.kind, result.confirmed) == ("member", True)
    assert result.tombstone.topic == pipeline.topics.members
