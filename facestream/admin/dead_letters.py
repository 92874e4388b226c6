"""What the dead-letter topics hold of a person, and until when.

A dead letter (:meth:`facestream.runtime.runner.Runner._dead_letter`) is written with the failed
record's key (a store id) and no headers; its value, a :class:`DeadLetter`, keeps the reason,
the source place and the source headers (a frame's: frame, store, camera, time; observations and
match events have none). The failed value itself (a face image, an observation with its
encoding, a match event naming a member or a FaceId) is kept only with
``FACESTREAM_DLQ_KEEP_PAYLOAD=true``; by default it is withheld (size and SHA-256 only), so no
dead letter names a member or a FaceId (tests/admin/test_dead_letters.py checks it on all
three topics). With payloads kept, ``matches.v1.dlq`` names them, ``encodings.v1.dlq`` holds
encodings (the observation that minted a FaceId derives it) and ``frames.v1.dlq`` images.

No dead letter can be deleted before its topic's retention. :func:`dead_letters` reads each
dead-letter topic from its start (bounded: a topic holds at most its retention) and reports the
dead letters that name the subject, those that keep a payload at all (an image or an encoding
of someone, which no reading can attribute to a person), and when retention deletes the newest
of them at the latest (its timestamp + ``retention.ms`` + ``segment.ms``, read from the broker).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka.admin import ConfigResource, ConfigResourceType

from facestream.runtime import kafka_clients
from facestream.runtime.settings import PipelineSettings
from facestream.runtime.topic_reads import read_to_end
from facestream.schemas import DeadLetter, SchemaError, decode, derived_id
from facestream.schemas.keys import split_identity_key

# An id is matched whole: "M-1" must not be found inside "M-12" (ids use schemas' ID_PATTERN).
_ID_CHARS = r"A-Za-z0-9._:@-"


@dataclass(frozen=True)
class DeadLetterPlace:
    """What one dead-letter topic holds that concerns the subject."""

    topic: str
    naming: int
    """Dead letters whose key, headers, error or kept payload name the subject."""
    payloads: int
    """Dead letters that keep a payload (an image or an encoding, of whoever it was)."""
    gone_by: datetime | None
    """When retention deletes the newest of those dead letters at the latest; None: none."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "naming": self.naming,
            "payloads": self.payloads,
            "gone_by": self.gone_by.isoformat() if self.gone_by else None,
        }

    @property
    def detail(self) -> str:
        """One line for people."""
        if not self.naming and not self.payloads:
            return "no dead letter names the subject or keeps a payload"
        return (
            f"dead letters naming the subject: {self.naming}, keeping a payload (an image or "
            f"encoding): {self.payloads}; deleted by retention by "
            f"{self.gone_by:%Y-%m-%d %H:%M} UTC"
        )


def dead_letters(
    subject: str, settings: PipelineSettings, timeout: float = 60.0
) -> tuple[DeadLetterPlace, ...]:
    """What each dead-letter topic holds of ``subject`` (a member id, or ``store/face_id``).
    Raises :class:`~facestream.runtime.topic_reads.ReadTimeout` past ``timeout`` per topic."""
    topics = settings.topics
    names = [topics.dlq(t) for t in (topics.frames, topics.encodings, topics.matches)]
    lifetimes = _lifetimes(settings, names)
    return tuple(_place(subject, settings, name, lifetimes[name], timeout) for name in names)


def _place(
    subject: str, settings: PipelineSettings, topic: str, lifetime: timedelta, timeout: float
) -> DeadLetterPlace:
    ident = split_identity_key(subject)
    person = subject if ident is None else ident[1]
    pattern = re.compile(rf"(?<![{_ID_CHARS}]){re.escape(person)}(?![{_ID_CHARS}])")
    face_id = None if ident is None else ident[1]
    naming = payloads = 0
    newest: int | None = None
    for record in read_to_end(settings, topic, lambda _: True, timeout):
        named, kept = _concerns(pattern, face_id, record.key, record.value)
        naming += named
        payloads += kept
        if named or kept:
            newest = max(newest or 0, record.timestamp)
    gone_by = None
    if newest is not None:
        gone_by = datetime.fromtimestamp(newest / 1000, UTC) + lifetime
    return DeadLetterPlace(topic, naming, payloads, gone_by)


def _concerns(
    named: re.Pattern[str], face_id: str | None, key: bytes | None, value: bytes | None
) -> tuple[bool, bool]:
    """Whether the dead letter names the subject (``named`` finds its id; a visitor's
    ``face_id`` may also be derived from a kept observation), and whether it keeps a payload."""
    texts = [(key or b"").decode("utf-8", "replace")]
    payload = b""
    try:
        letter = decode(DeadLetter, value)
    except SchemaError:
        # Not a dead letter as this version writes them: search all of it.
        texts.append((value or b"").decode("utf-8", "replace"))
    else:
        texts += [letter.source_key or "", letter.error, *letter.source_headers.values()]
        try:
            payload = base64.b64decode(letter.payload_b64)
        except (binascii.Error, ValueError):
            texts.append(letter.payload_b64)
    texts.append(payload.decode("utf-8", "replace"))
    found = any(named.search(text) for text in texts)
    if not found and face_id is not None:
        found = _minted_from(payload, face_id)
    return found, bool(payload)


def _minted_from(payload: bytes, face_id: str) -> bool:
    """Whether ``payload`` is the observation that minted ``face_id`` (its id derives it)."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    obs_id = data.get("observation_id") if isinstance(data, dict) else None
    return isinstance(obs_id, str) and derived_id("face", obs_id) == face_id


def _lifetimes(settings: PipelineSettings, topics: Sequence[str]) -> dict[str, timedelta]:
    """How long each topic keeps a record at most: ``retention.ms`` + ``segment.ms`` (a
    segment is deleted whole once closed), as the broker has them."""
    admin = kafka_clients.admin(settings)
    try:
        found = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        )["topic"]
    finally:
        admin.close()
    out = {}
    for name in topics:
        configs = found.get(name, {})
        ms = [int(configs[k]["value"]) for k in ("retention.ms", "segment.ms") if k in configs]
        out[name] = timedelta(milliseconds=sum(ms))
    return out
