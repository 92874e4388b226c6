"""Topic names and the production topic list, in one place.

:class:`Topics` names the topics; a prefix gives a pipeline (or a test) topics of its own.
:func:`topic_specs` is the list every deployment creates: names, partition counts and
topic-level configs. The local stack (:mod:`facestream.devstack.topics`) creates it as it is,
and ``deploy/k8s/base/create-topics.sh`` must agree with it (``tests/deploy`` checks that).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DLQ_SUFFIX = ".dlq"

DEFAULT_PARTITIONS = 4
"""Partitions of the store-keyed topics unless a deployment asks for another count."""

_HOUR = 3_600_000
_DAY = 24 * _HOUR

# Retention in ms. Time retention deletes whole closed segments only, so every topic also rolls
# its segments often (segment.ms): a record is gone at most retention + segment.ms (+ the
# broker's 5-minute retention check) after it was written, however little traffic there is.
FRAMES_RETENTION_MS = 6 * _HOUR
"""Raw frames are face images: kept long enough to absorb a detector outage of a few hours."""
FRAMES_DLQ_RETENTION_MS = _DAY
ENCODINGS_RETENTION_MS = _DAY
"""Encodings are biometric: a day covers a matcher outage overnight and bounds how far back a
replay of old encodings can reach (a replayed observation gets the match event it had, read
back from matches.v1, which is kept longer: services/matcher/decided.py)."""
ENCODINGS_DLQ_RETENTION_MS = 2 * _DAY
MATCHES_RETENTION_MS = 6 * _DAY
"""With daily segments a match event lives 6 to 7 days: never longer than the sink remembers
event ids (FACESTREAM_SINK_DEDUP_TTL_DAYS, 7), or a replay from the start would count it twice."""
MATCHES_DLQ_RETENTION_MS = 7 * _DAY

MAX_FRAME_BYTES = 8 * 1024 * 1024
"""What the producers allow (a 4K JPEG can pass the broker's default 1 MB)."""
MAX_DEAD_LETTER_BYTES = 2 * 1024 * 1024
"""A dead letter that keeps its payload (FACESTREAM_DLQ_KEEP_PAYLOAD) carries up to 1 MiB of it
as base64 inside JSON: about 1.4 MB."""

COMPACTED_SEGMENT_MS = _HOUR
MAX_COMPACTION_LAG_MS = 6 * _HOUR
TOMBSTONE_RETENTION_MS = 7 * _DAY


def _deleted(retention_ms: int, segment_ms: int, **extra: str) -> Mapping[str, str]:
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(retention_ms),
        "segment.ms": str(segment_ms),
        **extra,
    }


def _dead_letters(retention_ms: int, segment_ms: int) -> Mapping[str, str]:
    return _deleted(retention_ms, segment_ms, **{"max.message.bytes": str(MAX_DEAD_LETTER_BYTES)})


# An erased record (a value replaced by a tombstone) stays readable until the cleaner compacts
# it away. The cleaner never touches the active segment, which rolls after segment.ms (at the
# next write), and max.compaction.lag.ms forces a cleaning whatever the dirty ratio: an erased
# value is unreadable within about segment.ms + max.compaction.lag.ms (7 h) of its tombstone.
# Tombstones themselves are kept delete.retention.ms (7 days) after that, so a consumer stopped
# for up to a week still reads them (Kafka's default is one day); they hold only the key.
_COMPACT: Mapping[str, str] = {
    "cleanup.policy": "compact",
    "segment.ms": str(COMPACTED_SEGMENT_MS),
    "min.cleanable.dirty.ratio": "0.1",
    "max.compaction.lag.ms": str(MAX_COMPACTION_LAG_MS),
    "delete.retention.ms": str(TOMBSTONE_RETENTION_MS),
}


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    @property
    def frames(self) -> str:
        return f"{self.prefix}frames.v1"

    @property
    def encodings(self) -> str:
        return f"{self.prefix}encodings.v1"

    @property
    def matches(self) -> str:
        return f"{self.prefix}matches.v1"

    @property
    def members(self) -> str:
        return f"{self.prefix}members.v1"

    @property
    def identities(self) -> str:
        return f"{self.prefix}identities.v1"

    @property
    def member_samples(self) -> str:
        return f"{self.prefix}member-samples.v1"

    @staticmethod
    def dlq(topic: str) -> str:
        return topic + DLQ_SUFFIX


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the pipeline: name, partition count and topic-level configs."""

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


def topic_specs(partitions: int = DEFAULT_PARTITIONS, prefix: str = "") -> tuple[TopicSpec, ...]:
    """The pipeline's topics with ``partitions`` partitions for the store-keyed ones, named
    with ``prefix`` (see :class:`Topics`), each with explicit retention (docs/privacy.md).

    ``identities.v1`` always gets the same count as ``encodings.v1``: a matcher writes a store's
    FaceIds to the partition that the store maps to in ``encodings.v1``, so the two must agree.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    t = Topics(prefix)
    return (
        TopicSpec(
            t.frames,
            partitions,
            _deleted(FRAMES_RETENTION_MS, _HOUR, **{"max.message.bytes": str(MAX_FRAME_BYTES)}),
        ),
        TopicSpec(t.encodings, partitions, _deleted(ENCODINGS_RETENTION_MS, _HOUR)),
        TopicSpec(t.matches, partitions, _deleted(MATCHES_RETENTION_MS, _DAY)),
        # Members are replicated whole to every matcher, so one partition keeps reads simple.
        TopicSpec(t.members, 1, _COMPACT),
        TopicSpec(t.identities, partitions, _COMPACT),
        # Samples the matchers learned for members: replicated like the members themselves.
        TopicSpec(t.member_samples, 1, _COMPACT),
        # Dead letters are rare and read by people: one partition keeps them in one ordered list.
        TopicSpec(t.dlq(t.frames), 1, _dead_letters(FRAMES_DLQ_RETENTION_MS, _HOUR)),
        TopicSpec(t.dlq(t.encodings), 1, _dead_letters(ENCODINGS_DLQ_RETENTION_MS, _HOUR)),
        TopicSpec(t.dlq(t.matches), 1, _dead_letters(MATCHES_DLQ_RETENTION_MS, _DAY)),
    )
