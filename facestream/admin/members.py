"""Members and erasure on the pipeline's topics: publish enrolled members, erase a person.

:func:`publish_members` enrolls a folder of photos with the same machinery as ``facestream
enroll`` (one subject per photo, every skip reported) and publishes one :class:`MemberRecord`
per member to the compacted ``members.v1``, which every matcher mirrors.

:func:`erase` deletes a member (by member id) or an anonymous visitor (``store/face_id``):
a tombstone on the compacted topic that holds them, then a bounded wait until every live
matcher has acknowledged it in Redis, then the sink's purge of their visits, when the sink
provides one.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from pydantic import ValidationError

from facestream.core.enrollment import enroll_photos, scan
from facestream.core.gallery import Gallery
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import MemberRecord
from facestream.schemas.keys import partition_for, split_identity_key
from facestream.services.matcher.presence import acknowledgements, live_matchers

log = logging.getLogger(__name__)

MAX_ENCODINGS = 64
"""A :class:`MemberRecord` carries at most this many encodings (its schema's limit)."""


def publish_members(
    folder: Path,
    settings: PipelineSettings,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Enroll every person under ``folder`` and publish them to ``members.v1``.

    Returns the enrollment report (``facestream enroll``'s) with ``published`` (member ids),
    ``invalid`` (ids refused by the schema, with why) and ``topic``. A member's record replaces
    any earlier one: it carries all the encodings of this run, not those of earlier runs."""
    photos = scan(folder)
    staging = Gallery()  # the enrollment machinery collects encodings per identity here
    report = enroll_photos(photos, staging, workers=workers, progress=progress)
    now = datetime.now(UTC)
    records: list[MemberRecord] = []
    invalid: dict[str, str] = {}
    for identity in staging.identities():
        samples = staging.samples(identity.id)
        if len(samples) > MAX_ENCODINGS:
            log.warning(
                "member %s: %d photos, publishing the first %d",
                identity.id,
                len(samples),
                MAX_ENCODINGS,
            )
        try:
            records.append(
                MemberRecord(
                    member_id=identity.id,
                    name=identity.name,
                    encodings=list(samples[:MAX_ENCODINGS]),
                    enrolled_at=now,
                )
            )
        except ValidationError as exc:
            invalid[identity.id] = exc.errors()[0]["msg"]
    topic = settings.topics.members
    producer = make_producer(settings.kafka_bootstrap)
    try:
        futures = [
            producer.send(topic, key=r.member_id.encode(), value=r.to_bytes()) for r in records
        ]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)  # raises if the broker refused a record
    finally:
        producer.close(timeout=10)
    log.info("published %d members to %s", len(records), topic)
    summary = report.as_dict()
    summary.update(
        {"topic": topic, "published": [r.member_id for r in records], "invalid": invalid}
    )
    return summary


def erase(subject: str, settings: PipelineSettings, timeout: float = 30.0) -> dict[str, Any]:
    """Erase a member (``subject`` = member id) or a visitor (``store/face_id``) everywhere.

    Produces the tombstone, waits at most ``timeout`` seconds for every matcher that is alive
    (heartbeat in the last 30 s) to acknowledge it, then purges the subject's visits in Redis
    through the sink. ``confirmed`` is true when every such matcher acknowledged."""
    topics = settings.topics
    ident = split_identity_key(subject)
    client = redis.Redis.from_url(settings.redis_url)
    # Who must confirm: the matchers alive now. One that starts later reads the tombstone
    # (or, once compacted, nothing of the subject) when it builds its state.
    required = live_matchers(client, settings.redis_prefix)
    producer = make_producer(settings.kafka_bootstrap)
    try:
        if ident is None:
            kind, topic, partition = "member", topics.members, None
        else:
            kind, topic = "visitor", topics.identities
            # The partition the store's FaceIds live in: where its encodings are (murmur2).
            count = len(producer.partitions_for(topics.encodings))
            partition = partition_for(ident[0], count)
        meta = producer.send(topic, key=subject.encode(), value=None, partition=partition).get(
            timeout=30
        )
    finally:
        producer.close(timeout=10)
    log.info("tombstone for %s %s at %s[%d]@%d", kind, subject, topic, meta.partition, meta.offset)

    deadline = time.monotonic() + timeout
    acked: dict[str, float] = {}
    while True:
        acked = acknowledgements(client, settings.redis_prefix, subject)
        # A matcher that died meanwhile cannot confirm; it holds nothing once it is gone.
        waiting = (required & live_matchers(client, settings.redis_prefix)) - set(acked)
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    result: dict[str, Any] = {
        "subject": subject,
        "kind": kind,
        "tombstone": {"topic": topic, "partition": meta.partition, "offset": meta.offset},
        "matchers": sorted(required),
        "acknowledged": sorted(m for m in acked if m in required),
        "pending": sorted(waiting),
        "confirmed": not waiting,
        "visits_purged": _purge_visits(subject, settings),
    }
    return result


def _purge_visits(subject: str, settings: PipelineSettings) -> int | None:
    """The sink's purge of the subject's visits in Redis (keys changed), None without a sink."""
    try:
        from facestream.services.sink.store import purge
    except ImportError:
        log.warning(
            "facestream.services.sink.store.purge not available: visits of %s not purged", subject
        )
        return None
    ident = split_identity_key(subject)
    if ident is None:
        return purge(subject, settings)
    # The sink keys visitors by FaceId within their store.
    store, face_id = ident
    return purge(face_id, settings, stores=[store])
