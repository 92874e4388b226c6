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

_COMPACT: Mapping[str, str] = {"cleanup.policy": "compact"}


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
    with ``prefix`` (see :class:`Topics`).

    ``identities.v1`` always gets the same count as ``encodings.v1``: a matcher writes a store's
    FaceIds to the partition that the store maps to in ``encodings.v1``, so the two must agree.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    t = Topics(prefix)
    return (
        TopicSpec(t.frames, partitions),
        TopicSpec(t.encodings, partitions),
        TopicSpec(t.matches, partitions),
        # Members are replicated whole to every matcher, so one partition keeps reads simple.
        TopicSpec(t.members, 1, _COMPACT),
        TopicSpec(t.identities, partitions, _COMPACT),
        # Dead letters are rare and read by people: one partition keeps them in one ordered list.
        TopicSpec(t.dlq(t.frames), 1),
        TopicSpec(t.dlq(t.encodings), 1),
        TopicSpec(t.dlq(t.matches), 1),
    )
