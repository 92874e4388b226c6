"""A CRM in another language: ``examples/crm-node`` (Node.js, kafkajs from the npm registry, ajv
with the published JSON Schema) reads a real replay's ``matches.v1`` as a CRM would. It must
read every event once, park the record that breaks the contract, skip a redelivered event, and
greet exactly the members the Python example greets."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from facestream.core.engine import FaceEngine
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import MatchEvent, SchemaError, decode
from facestream.services.sink.settings import SinkSettings
from facestream.tools.crm_example import Greeter
from tests.kafka_fixtures import read_topic
from tests.schemas.small_replay import SmallReplay, run_small_replay

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "crm-node"


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def node() -> str:
    """The ``node`` binary, with the example's locked dependencies installed (``npm ci``)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are needed: apt-get install nodejs npm")
    assert node is not None and npm is not None
    if not (EXAMPLE / "node_modules" / "kafkajs").is_dir():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=EXAMPLE,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            _unavailable(f"npm ci failed in {EXAMPLE}:\n{done.stderr[-2000:]}")
    return node


@pytest.fixture(scope="module")
def replayed(
    lfw: Path,
    engine: FaceEngine,
    live_stack: PipelineSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> SmallReplay:
    return run_small_replay(lfw, engine, live_stack, tmp_path_factory.mktemp("crm"), "crm-node")


def _run_node(node: str, replayed: SmallReplay) -> list[dict[str, Any]]:
    settings = replayed.settings
    env = {
        **os.environ,
        "FACESTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FACESTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "FACESTREAM_GROUP_PREFIX": settings.group_prefix,
        "FACESTREAM_SINK_STORE_TIMEZONES": json.dumps({replayed.store: replayed.timezone}),
    }
    done = subprocess.run(
        [node, "crm.js", "--from-beginning", "--max-idle-seconds", "6", "--json"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.timeout(900)
def test_a_node_crm_reads_the_matches_as_the_contract_says(
    node: str, replayed: SmallReplay
) -> None:
    settings = replayed.settings
    records = read_topic(settings, settings.topics.matches)
    events: list[MatchEvent] = []
    for record in records:
        with contextlib.suppress(SchemaError):  # the replay's junk record
            events.append(decode(MatchEvent, record.value))
    assert len(events) == len(records) - 1 >= replayed.sightings
    # The matcher's at-least-once delivery, acted out: one event arrives a second time.
    producer = make_producer(settings)
    producer.send(settings.topics.matches, events[0].to_bytes(), replayed.store.encode())
    producer.flush(30)
    producer.close()

    lines = _run_node(node, replayed)

    read = [line["event"] for line in lines if "event" in line]
    assert [e["event_id"] for e in read] == [e.event_id for e in events]
    assert [e["kind"] for e in read] == [e.kind for e in events]
    assert {e["kind"] for e in read} == {"member", "new", "returning"}
    greeter = Greeter(SinkSettings(store_timezones={replayed.store: replayed.timezone}))
    expected = [g for g in map(greeter.offer, events) if g is not None]
    assert expected, "the replay greeted no member"
    assert [line["greeting"] for line in lines if "greeting" in line] == expected
    summary = lines[-1]["summary"]
    assert summary == {
        "read": len(records) + 1,
        "duplicates": 1,
        "parked": 1,
        "greetings": len(expected),
    }
