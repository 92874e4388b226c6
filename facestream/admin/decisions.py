"""The decisions the matchers made about a person, read back from ``matches.v1`` for an erasure.

A replay of ``encodings.v1`` (a consumer group reset, a restore) hands the matchers observations
they decided before. For one decided as a person who has since been erased, a fresh decision
finds nobody and mints a new FaceId from the erased person's encoding. The erasure therefore
lists the observations decided as the person (:data:`facestream.schemas.keys.DECIDED`), and a
matcher re-emits those decisions as they were. Only what a replay can still reach is read: the
match events written within the lifetime of ``encodings.v1`` (its ``retention.ms`` +
``segment.ms`` as the broker has them, plus the broker's retention check), a day by default.
"""

from __future__ import annotations

import time
from datetime import timedelta

from facestream.admin.topic_reads import lifetimes, read_to_end
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import MatchEvent, SchemaError, decode
from facestream.schemas.keys import DecidedKind, split_identity_key

RETENTION_CHECK = timedelta(minutes=5)
"""How late the broker may delete a segment past its retention (log.retention.check.interval.ms
defaults to 5 minutes)."""


def decided_as(subject: str, settings: PipelineSettings, timeout: float) -> list[DecidedKind]:
    """``(observation_id, kind)`` of the match events naming ``subject`` (a member id, or
    ``store/face_id``: the visitor's own store's events and its neighbours' that matched it
    there) among those a replay of ``encodings.v1`` can still bring back, in the order they
    were written per partition. Raises :class:`~facestream.admin.topic_reads.ReadTimeout`
    past ``timeout``."""
    topics = settings.topics
    reach = lifetimes(settings, [topics.encodings])[topics.encodings] + RETENTION_CHECK
    since_ms = int((time.time() - reach.total_seconds()) * 1000)
    ident = split_identity_key(subject)
    person = subject if ident is None else ident[1]
    needle = person.encode()

    def names_subject(event: MatchEvent) -> bool:
        if ident is None:
            return event.kind == "member" and event.member_id == subject
        store, face_id = ident
        return event.face_id == face_id and (event.matched_store_id or event.store_id) == store

    found: list[DecidedKind] = []
    # Most events name someone else: the byte search spares decoding them.
    for record in read_to_end(
        settings,
        topics.matches,
        lambda r: bool(r.value) and needle in r.value,
        timeout,
        since_ms=since_ms,
    ):
        try:
            event = decode(MatchEvent, record.value)
        except SchemaError:
            continue  # the sink dead-lettered it: it decided nothing
        if names_subject(event):
            found.append((event.observation_id, event.kind))
    return found
