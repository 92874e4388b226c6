"""Members on the pipeline's topics: :func:`publish_members` enrolls a folder of photos with the
same machinery as ``facestream enroll`` (one subject per photo, every skip reported) and
publishes one :class:`MemberRecord` per member to the compacted ``members.v1``, which every
matcher mirrors. Erasing a member is :mod:`facestream.admin.erasure`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from facestream.core.engine import EngineConfig
from facestream.core.enrollment import EnrollReport, enroll_photos, scan
from facestream.core.gallery import Gallery
from facestream.runtime.runner import make_producer
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import MemberRecord

log = logging.getLogger(__name__)

MAX_ENCODINGS = 64
"""A :class:`MemberRecord` carries at most this many encodings (its schema's limit)."""


@dataclass(frozen=True)
class MembersReport:
    """What :func:`publish_members` did: the enrollment of every photo, then what was sent."""

    enrollment: EnrollReport
    topic: str
    published: tuple[str, ...]
    """Member ids published, in the order they were sent."""
    invalid: Mapping[str, str] = field(default_factory=dict)
    """Member id -> why the schema refused its record (not published)."""

    @property
    def photos(self) -> int:
        """How many photos were read (enrolled or skipped)."""
        return len(self.enrollment.results)

    def as_dict(self) -> dict[str, Any]:
        """The enrollment report's :meth:`~EnrollReport.as_dict` with ``topic``, ``published``
        and ``invalid``: what ``facestream enroll --members --json`` prints."""
        return {
            **self.enrollment.as_dict(),
            "topic": self.topic,
            "published": list(self.published),
            "invalid": dict(self.invalid),
        }


def publish_members(
    folder: Path,
    settings: PipelineSettings,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> MembersReport:
    """Enroll every person under ``folder`` and publish them to ``members.v1``.

    A member's record replaces any earlier one: it carries all the encodings of this run, not
    those of earlier runs. Members whose record the schema refuses are reported, not sent."""
    photos = scan(folder)
    staging = Gallery()  # the enrollment machinery collects encodings per identity here
    engine = EngineConfig()  # the records name the encoder that made their encodings
    report = enroll_photos(photos, staging, engine=engine, workers=workers, progress=progress)
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
                    model_version=engine.model_version,
                )
            )
        except ValidationError as exc:
            invalid[identity.id] = exc.errors()[0]["msg"]
    topic = settings.topics.members
    producer = make_producer(settings)
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
    return MembersReport(report, topic, tuple(r.member_id for r in records), invalid)
