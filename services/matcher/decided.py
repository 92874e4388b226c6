"""Decisions already published, read back from ``matches.v1``: an observation handled again gets
the very match event it had.

An observation is handled again when its batch was decided but not committed before a crash or
a rebalance, or when ``encodings.v1`` is replayed (its records published again, or the group
reset). Deciding it anew would use today's state: a member enrolled meanwhile, a visitor who
learned or was erased, another visitor minted later in the batch. The decision could change
(returning becomes member, or a new FaceId is minted for an erased person), and the sink, which
keeps the first event of an id, and a CRM, which sees both, would disagree. A replay therefore
re-emits what was published.

What is held: every decision this matcher made (the latest :data:`MAX_LOGGED`), and, for a
partition it was given, what ``matches.v1`` holds of that partition (the same store keys, so the
same partition when the counts agree, as :func:`facestream.runtime.topics.topic_specs` makes
them) from a little before the capture time of the oldest observation it has handled there: a
match event is published after its observation was captured, so nothing earlier can be the
decision of an observation captured later. The margin is the camera clock's allowed lead over
the broker's (``FACESTREAM_MAX_AHEAD_SECONDS``) plus 5 minutes. After a restart that is the
events since the first observation not committed, a few batches; a replay of a day of
encodings reads a day of the partition's events, once (the coverage only grows backwards when an
older observation arrives).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Final

from facestream.runtime.kafka_clients import KafkaSettings
from facestream.runtime.topic_reads import read_to_end
from facestream.services.matcher import metrics

log = logging.getLogger(__name__)

CLOCK_MARGIN_MS: Final = 5 * 60 * 1000
"""Added to a camera's allowed lead: the broker's and the matcher's clocks may differ too."""

MAX_LOGGED: Final = 100_000
"""Decisions held at most, about 70 MB (a match event is about 500 bytes, and its entry costs as
much again). The oldest are forgotten first, and their observations, if replayed, are decided
anew: a replay of more decisions than this (a busy partition's day) is identical only for its
latest part. The coverage does not move forward when an entry is forgotten, or every record of
such a replay would read the day again."""


class DecisionLog:
    """Match events already in ``matches.v1`` for the observations of the assigned partitions."""

    def __init__(
        self, kafka: KafkaSettings, topic: str, *, client_id: str, limit: int = MAX_LOGGED
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.client_id = client_id
        self.limit = limit
        self._events: dict[str, tuple[int, bytes]] = {}
        """Observation id -> (encodings partition, its match event's bytes)."""
        self._from: dict[int, int] = {}
        """Partition -> epoch ms from which its events were read back."""

    def covers(self, partition: int, since_ms: int) -> bool:
        """Whether the decisions published for ``partition`` from ``since_ms`` on are held."""
        held = self._from.get(partition)
        return held is not None and held <= since_ms

    def remember(self, observation_id: str, partition: int, event: bytes) -> None:
        """A decision this matcher made (its match event's bytes)."""
        self._put(observation_id, partition, event)

    def load(self, partition: int, of: int, since_ms: int, timeout: float) -> int:
        """Read the decisions of the observations of ``partition`` (of ``of`` in
        ``encodings.v1``) published from ``since_ms`` (epoch ms) to the end of now; returns
        how many. Raises :class:`~facestream.runtime.topic_reads.ReadTimeout` past ``timeout``
        seconds (the coverage is then unchanged)."""

        def ours(count: int) -> list[int]:
            # With another partition count than encodings.v1's, the events could be anywhere.
            return [partition] if count == of else list(range(count))

        events = read_to_end(
            self.kafka,
            self.topic,
            lambda record: bool(record.value),
            timeout,
            ours,
            since_ms=max(0, since_ms),
            client_id=self.client_id,
        )
        read = 0
        for record in events:
            observation_id = _observation_id(record.value)
            if observation_id is not None:
                self._put(observation_id, partition, record.value)
                read += 1
        self._from[partition] = min(since_ms, self._from.get(partition, since_ms))
        metrics.DECISIONS_READ.inc(read)
        log.info("partition %d: %d decisions read back from %s", partition, read, self.topic)
        if read > self.limit:
            log.warning(
                "partition %d: %d decisions read back, %d held: a replay of the oldest %d "
                "decides them anew",
                partition,
                read,
                self.limit,
                read - self.limit,
            )
        return read

    def get(self, observation_id: str) -> bytes | None:
        """The match event published for ``observation_id``, if any was read back."""
        held = self._events.get(observation_id)
        return held[1] if held else None

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what was read for ``partitions`` (revoked: their next owner reads it again)."""
        gone = set(partitions)
        for partition in gone:
            self._from.pop(partition, None)
        self._events = {k: v for k, v in self._events.items() if v[0] not in gone}

    def _put(self, observation_id: str, partition: int, value: bytes) -> None:
        self._events.pop(observation_id, None)
        self._events[observation_id] = (partition, value)
        while len(self._events) > self.limit:
            del self._events[next(iter(self._events))]


def _observation_id(value: bytes | None) -> str | None:
    """The ``observation_id`` of a match event; None for anything else (the sink dead-letters
    what does not decode: it decided nothing to repeat)."""
    if not value:
        return None
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    found = data.get("observation_id") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None
