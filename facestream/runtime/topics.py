"""Topic names, in one place. A prefix gives a pipeline (or a test) topics of its own."""

from __future__ import annotations

from dataclasses import dataclass

DLQ_SUFFIX = ".dlq"


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
