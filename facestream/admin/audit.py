"""Where a person's data still is: the check behind ``facestream audit SUBJECT``.

An erasure (:mod:`.erasure`) writes tombstones, waits for the matchers and purges Redis. This
module reads every place that can hold a member (member id) or an anonymous visitor
(``store/face_id``) and says what each still holds, so that an erasure can be *shown* done:

* the compacted topics: ``members.v1`` and ``member-samples.v1`` for a member,
  ``identities.v1`` (the store's partition) for a visitor. ``live`` when the latest record of
  the key carries a value; older values stay *readable* in the log until the cleaner compacts
  them (bounded, about 7 h after the tombstone: docs/privacy.md);
* Redis: the sink's visit history, day sets and member arrivals naming the subject, and the
  matchers that acknowledged its erasure;
* API gallery files named by the caller (``facestream serve --gallery FILE``);
* the dead-letter topics (:mod:`.dead_letters`): never current state, but a dead letter that
  names the subject (only possible with ``FACESTREAM_DLQ_KEEP_PAYLOAD``) stays readable until
  retention deletes it.

* the stream topics (``frames.v1``, ``encodings.v1``, ``matches.v1``; :mod:`.streams`), once
  the subject has a tombstone: how many records written before it the partitions that may hold
  the subject still keep, of every store in them. They are not read (which of a week of frames
  and encodings are the subject's no reading can tell), only counted; retention deletes them,
  or ``facestream erase --cut-streams`` deletes those every reader has read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facestream.admin.dead_letters import dead_letters
from facestream.admin.streams import held_before
from facestream.core.gallery import Gallery
from facestream.runtime.redis_clients import redis_client
from facestream.runtime.settings import PipelineSettings
from facestream.runtime.topic_reads import of_store, read_to_end, topic_partitions
from facestream.schemas.keys import partition_for, split_identity_key
from facestream.services.matcher.presence import acknowledgements
from facestream.services.matcher.snapshots import SnapshotStore
from facestream.services.sink.store import traces


@dataclass(frozen=True)
class Place:
    """What one place holds of the subject."""

    place: str
    live: bool
    """The place holds the subject's data as current state."""
    readable: int
    """Records or entries of the subject still readable there (live or awaiting compaction)."""
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "place": self.place,
            "live": self.live,
            "readable": self.readable,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Audit:
    """The outcome of :func:`audit`."""

    subject: str
    kind: str
    places: tuple[Place, ...]
    acknowledged_by: tuple[str, ...]
    """Matchers that acknowledged the subject's erasure (Redis)."""

    @property
    def erased(self) -> bool:
        """No place holds the subject as current state."""
        return not any(p.live for p in self.places)

    @property
    def gone(self) -> bool:
        """Nothing of the subject is readable anywhere any more (compaction done too)."""
        return self.erased and not any(p.readable for p in self.places)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form that ``facestream audit --json`` prints."""
        return {
            "subject": self.subject,
            "kind": self.kind,
            "erased": self.erased,
            "gone": self.gone,
            "places": [p.as_dict() for p in self.places],
            "acknowledged_by": list(self.acknowledged_by),
        }


def audit(
    subject: str,
    settings: PipelineSettings,
    galleries: Sequence[Path] = (),
    timeout: float = 60.0,
    snapshots: SnapshotStore | None = None,
) -> Audit:
    """Read every place that can hold ``subject`` (a member id, or ``store/face_id``) and say
    what each holds. Raises :class:`~facestream.runtime.topic_reads.ReadTimeout` when a topic
    cannot be read in ``timeout``."""
    topics = settings.topics
    ident = split_identity_key(subject)
    client = redis_client(settings)
    wanted: dict[str, str | None]
    try:
        if ident is None:
            kind, person, stores = "member", subject, None
            wanted = {topics.members: None, topics.member_samples: None}
        else:
            kind, (store, person) = "visitor", ident
            stores = [store]
            wanted = {topics.identities: store}
        read = [
            _topic_place(settings, topic, subject, store_of, timeout)
            for topic, store_of in wanted.items()
        ]
        places = [place for place, _ in read]
        erased_at = max((at for _, at in read if at is not None), default=None)
        found = traces(person, settings, stores=stores)
        held = found["visits"] + found["day_sets"] + found["arrivals"]
        places.append(
            Place(
                "redis",
                held > 0,
                held,
                f"{found['visits']} visit histories, {found['day_sets']} day sets, "
                f"{found['arrivals']} member arrivals; {found['erasure_markers']} erasure "
                "markers",
            )
        )
        acked = tuple(sorted(acknowledgements(client, settings.redis_prefix, subject)))
    finally:
        client.close()
    places += [_gallery_place(path, person) for path in galleries]
    if snapshots is not None and ident is not None:
        places.append(_snapshot_place(settings, snapshots, subject, ident[0]))
    places += [
        Place(d.topic, False, d.naming, d.detail) for d in dead_letters(subject, settings, timeout)
    ]
    if erased_at is not None:
        places += _stream_places(settings, subject, erased_at)
    return Audit(subject, kind, tuple(places), acked)


def _stream_places(settings: PipelineSettings, subject: str, erased_at: int) -> list[Place]:
    """What the stream topics still keep from before the subject's tombstone (``erased_at``,
    ms)."""
    places = []
    for topic, (held, partitions) in held_before(settings, subject, erased_at).items():
        detail = (
            f"{held} records written before the erasure still held in {partitions} partitions "
            "that may hold the subject (of every store there); retention deletes them, or "
            "facestream erase --cut-streams"
            if held
            else f"nothing written before the erasure left in {partitions} partitions"
        )
        places.append(Place(topic, False, held, detail))
    return places


def _topic_place(
    settings: PipelineSettings, topic: str, key: str, store: str | None, timeout: float
) -> tuple[Place, int | None]:
    """The records of ``key`` in ``topic`` (the store's partition for a visitor), and the time
    (ms) of the latest tombstone of it, if any."""
    values, tombstoned, erased_at = 0, False, None
    raw = key.encode()
    select = None if store is None else of_store(store)
    for record in read_to_end(settings, topic, lambda r: r.key == raw, timeout, select):
        if record.value is None:
            tombstoned = True
            erased_at = record.timestamp
        else:
            values += 1
            tombstoned = False
    live = values > 0 and not tombstoned
    if not values and not tombstoned:
        detail = "no record"
    elif live:
        detail = f"latest record holds the data ({values} values readable)"
    else:
        detail = (
            f"tombstoned; {values} older values readable until compaction"
            if values
            else "tombstoned; no older value readable"
        )
    return Place(topic, live, values, detail), erased_at if tombstoned else None


def _snapshot_place(
    settings: PipelineSettings, snapshots: SnapshotStore, subject: str, store_id: str
) -> Place:
    """Whether the snapshot of the visitor's ``identities.v1`` partition holds them."""
    topic = settings.topics.identities
    partition = partition_for(store_id, topic_partitions(settings, settings.topics.encodings))
    path = snapshots.path(topic, partition)
    if not snapshots.holds(topic, partition, subject):
        detail = "no snapshot" if not path.exists() else "not in the snapshot"
        return Place(str(path), False, 0, detail)
    return Place(
        str(path),
        True,
        1,
        "the snapshot holds the visitor (or cannot be read): delete it with facestream erase "
        "--snapshots, or write it again with facestream snapshot",
    )


def _gallery_place(path: Path, identity_id: str) -> Place:
    """Whether the API's gallery file at ``path`` holds the identity."""
    if not path.exists():
        return Place(str(path), False, 0, "no gallery file")
    gallery = Gallery.load(path)
    if identity_id not in gallery:
        return Place(str(path), False, 0, "not in the gallery")
    samples = len(gallery.samples(identity_id))
    return Place(
        str(path),
        True,
        samples,
        f"{samples} samples (remove with facestream erase --gallery, or DELETE "
        "/identities/{id} on the API)",
    )
