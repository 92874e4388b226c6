"""The JSON Schemas in ``schemas/json``: generated from the models and never drifting from them,
valid JSON Schema, and checked by an independent validator (the ``jsonschema`` package, with
its RFC 3339 format checker) against the documented examples, against broken messages the
models refuse too, and against every record of a real replay."""

from __future__ import annotations

import base64
import copy
import inspect
import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from facestream.core.engine import FaceEngine
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import FrameMeta, IdentityRecord, Message, SchemaError, decode, messages
from facestream.schemas import json_schemas as generator
from facestream.schemas.keys import is_progress
from facestream.schemas.messages import IdentityRecordV1
from tests.kafka_fixtures import read_topic
from tests.schemas.small_replay import SmallReplay, run_small_replay

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas" / "json"
EVENTS_DOC = ROOT / "docs" / "events.md"
_EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\s*```json\n(.*?)```", re.DOTALL)


@cache
def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text())
    return loaded


def _errors(schema_file: str, document: Any) -> list[str]:
    schema = _schema(schema_file)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def _file(model: type[Message]) -> str:
    return next(c.file_name for c in generator.CONTRACTS if c.model is model)


# --- the files ------------------------------------------------------------------------------


def test_the_files_are_what_the_models_generate() -> None:
    problems = generator.drift(SCHEMA_DIR)
    assert not problems, (
        f"schemas/json drifted from the models: {problems}; regenerate with `facestream schemas`"
    )


def test_drift_is_detected(tmp_path: Path) -> None:
    generator.write(tmp_path)
    assert generator.drift(tmp_path) == []
    match = tmp_path / _file(messages.MatchEvent)
    match.write_text(match.read_text().replace('"returning"', '"regular"'))
    (tmp_path / "Stale.v1.schema.json").write_text("{}")
    (tmp_path / _file(messages.DeadLetter)).unlink()
    assert sorted(generator.drift(tmp_path)) == sorted(
        [
            f"{match.name}: differs from the model",
            "Stale.v1.schema.json: no model generates it",
            f"{_file(messages.DeadLetter)}: missing",
        ]
    )


def test_every_message_model_has_a_schema_and_every_schema_is_valid() -> None:
    models = {
        cls
        for _, cls in inspect.getmembers(messages, inspect.isclass)
        if issubclass(cls, Message) and cls not in (Message, messages.Box)
    }
    assert models == {c.model for c in generator.CONTRACTS}
    for contract in generator.CONTRACTS:
        schema = _schema(contract.file_name)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == generator.DIALECT
        assert schema["additionalProperties"] is False
        # Every field is required but those added within the version (older records lack them).
        assert set(schema["required"]) == set(schema["properties"]) - contract.not_required
        assert schema["properties"]["v"]["const"] in (contract.version, str(contract.version))


def test_the_format_checker_checks_times() -> None:
    # Without rfc3339-validator installed, jsonschema silently skips "date-time".
    assert "date-time" in jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers


# --- documented and broken messages -----------------------------------------------------------


def _doc_examples() -> dict[str, Any]:
    return {name: json.loads(body) for name, body in _EXAMPLE.findall(EVENTS_DOC.read_text())}


def test_every_documented_example_fits_its_schema() -> None:
    examples = _doc_examples()
    assert len(examples) >= 8
    for name, document in examples.items():
        model = getattr(messages, name.split("-")[0])
        assert _errors(_file(model), document) == [], name


def _without(field: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(field)


def _setting(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.__setitem__(field, value)


_SHORT_ENCODING = base64.b64encode(b"\0" * 508).decode()
BROKEN: dict[str, Callable[[dict[str, Any]], None]] = {
    "an unknown field": _setting("mood", "happy"),
    "a missing field": _without("camera_id"),
    "another version": _setting("v", 2),
    "a version as text": _setting("v", "1"),
    "an unknown kind": _setting("kind", "regular"),
    "a time without offset": _setting("captured_at", "2026-11-29T10:15:02"),
    "a time that is no time": _setting("captured_at", "yesterday"),
    "an id with a slash": _setting("store_id", "chain/7"),
    "an empty id": _setting("camera_id", ""),
    "a box without a side": lambda doc: doc["box"].pop("left"),
    "a box with a fractional side": lambda doc: doc["box"].__setitem__("top", 80.5),
}
# The models read these leniently (pydantic's lax mode); no producer writes them, and the
# schemas, which describe what producers write, refuse them.
STRICTER: dict[str, Callable[[dict[str, Any]], None]] = {
    "a distance as text": _setting("distance", "0.2"),
    "a box side as text": lambda doc: doc["box"].__setitem__("top", "80"),
}


@pytest.mark.parametrize("what", sorted(BROKEN))
def test_the_schema_refuses_what_the_model_refuses(what: str) -> None:
    document = copy.deepcopy(_doc_examples()["MatchEvent-member"])
    BROKEN[what](document)
    assert _errors(_file(messages.MatchEvent), document), f"the schema accepts {what}"
    with pytest.raises(SchemaError):
        decode(messages.MatchEvent, json.dumps(document).encode())


@pytest.mark.parametrize("what", sorted(STRICTER))
def test_the_schema_is_stricter_than_the_model_about_types(what: str) -> None:
    document = copy.deepcopy(_doc_examples()["MatchEvent-member"])
    STRICTER[what](document)
    assert _errors(_file(messages.MatchEvent), document), f"the schema accepts {what}"
    decode(messages.MatchEvent, json.dumps(document).encode())


@pytest.mark.parametrize(
    "encoding",
    ["", _SHORT_ENCODING, "!" * 683 + "=", "A" * 684],
    ids=["empty", "short", "not-base64", "unpadded"],
)
def test_an_encoding_is_exactly_its_wire_form(encoding: str) -> None:
    document = copy.deepcopy(_doc_examples()["FaceObservation"])
    document["encoding"] = encoding
    assert _errors(_file(messages.FaceObservation), document)
    with pytest.raises(SchemaError):
        decode(messages.FaceObservation, json.dumps(document).encode())


def test_frame_headers_are_strings() -> None:
    headers = _doc_examples()["FrameMeta"]
    assert _errors(_file(FrameMeta), headers) == []
    assert _errors(_file(FrameMeta), {**headers, "v": 1})
    assert _errors(_file(FrameMeta), {**headers, "sharpness": "9"})


def test_both_versions_of_an_identity_record_have_a_schema() -> None:
    v2 = _doc_examples()["IdentityRecord"]
    v1 = {
        k: v
        for k, v in v2.items()
        if k not in ("encodings", "learned_from", "last_seen", "model_version")
    }
    v1.update(v=1, encoding=v2["encodings"][0])
    assert _errors(_file(IdentityRecord), v2) == []
    assert _errors(_file(IdentityRecordV1), v1) == []
    assert _errors(_file(IdentityRecord), v1)
    assert _errors(_file(IdentityRecordV1), v2)
    assert IdentityRecord.read(json.dumps(v1).encode()).encodings == [v2["encodings"][0]]


def test_last_seen_is_optional_and_never_before_first_seen() -> None:
    with_it = _doc_examples()["IdentityRecord"]
    without = {k: v for k, v in with_it.items() if k != "last_seen"}
    assert _errors(_file(IdentityRecord), without) == []
    old = IdentityRecord.read(json.dumps(without).encode())
    assert (old.last_seen, old.seen) == (None, old.first_seen)  # written before retention
    new = IdentityRecord.read(json.dumps(with_it).encode())
    assert new.last_seen is not None and new.seen == new.last_seen > new.first_seen
    with pytest.raises(SchemaError):
        IdentityRecord.read(json.dumps({**with_it, "last_seen": "2026-11-28T10:00:00Z"}).encode())


# --- a real replay ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replayed(
    lfw: Path,
    engine: FaceEngine,
    live_stack: PipelineSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> SmallReplay:
    return run_small_replay(lfw, engine, live_stack, tmp_path_factory.mktemp("contracts"), "json")


def _values(settings: PipelineSettings, topic: str, progress: bool = False) -> list[Any]:
    """The JSON values of ``topic``; of ``encodings.v1``, the faces, or with ``progress`` the
    detectors' camera progress (told apart by their header)."""
    return [
        json.loads(r.value)
        for r in read_topic(settings, topic)
        if r.value and not r.value.startswith(b"this is not") and is_progress(r.headers) == progress
    ]


@pytest.mark.timeout(900)
def test_every_record_of_a_replay_fits_its_schema(replayed: SmallReplay) -> None:
    topics = replayed.settings.topics
    checked: dict[str, int] = {}
    expected: dict[str, type[Message]] = {
        topics.encodings: messages.FaceObservation,
        topics.matches: messages.MatchEvent,
        topics.members: messages.MemberRecord,
        topics.identities: IdentityRecord,
        topics.dlq(topics.frames): messages.DeadLetter,
        topics.dlq(topics.encodings): messages.DeadLetter,
        topics.dlq(topics.matches): messages.DeadLetter,
    }
    for topic, model in expected.items():
        values = _values(replayed.settings, topic)
        for value in values:
            assert _errors(_file(model), value) == [], (topic, value)
        checked[topic] = len(values)
    progress = _values(replayed.settings, topics.encodings, progress=True)
    for value in progress:
        assert _errors(_file(messages.CameraProgress), value) == [], value
    checked["progress"] = len(progress)
    # Members learn only from confident sightings: the small day may or may not teach one.
    for value in _values(replayed.settings, topics.member_samples):
        assert _errors(_file(messages.MemberSamples), value) == [], value
    frames = [r for r in read_topic(replayed.settings, topics.frames) if r.headers]
    for record in frames:
        headers = {k: v.decode() for k, v in record.headers}
        assert _errors(_file(FrameMeta), headers) == [], headers
    # Every topic carried something: the check was not vacuous.
    assert all(checked.values()), checked
    assert len(frames) == replayed.sightings + 1  # and the junk frame, with good headers
    kinds = {v["kind"] for v in _values(replayed.settings, topics.matches)}
    assert kinds == {"member", "new", "returning"}
    reasons = {
        v["reason"]
        for t in ("frames", "encodings", "matches")
        for v in _values(replayed.settings, topics.dlq(getattr(topics, t)))
    }
    assert reasons == {"not_json", "image_not_an_image"}, reasons
