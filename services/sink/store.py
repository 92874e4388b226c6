"""The Redis data model of visits, and the two ways it changes: applying a match, and erasure.

Key layout (``P`` = ``PipelineSettings.redis_prefix``, ``S`` = store id, ``D`` = local day
``YYYY-MM-DD`` in the store's time zone, person = ``m:<member id>`` or ``f:<face id>``). Every
key of a store carries ``{S}`` as its Redis Cluster hash tag, so a store's keys share one slot
and the apply script can touch them all atomically.

==========================  ======  ==========================================  ================
key                         type    content                                     expires after
==========================  ======  ==========================================  ================
``P:{S}:offsets``           hash    ``topic:partition`` -> highest offset       dedup_ttl_days
                                    applied; ``events``: events applied (the
                                    score of ``recent``)
``P:{S}:recent``            zset    ids of the store's last                     dedup_ttl_days
                                    ``dedup_window_events`` events
``P:{S}:visits:<person>``   zset    one member ``start|end|D|events`` per       history_ttl_days
                                    visit, scored by its start (ms, event time)
``P:{S}:keys:<person>``     set     the day sets the person is in (for purge)   history_ttl_days
``P:{S}:erased:<person>``   string  erasure time (ms); older events are dropped 7 days
``P:{S}:day:D``             hash    pv, uv, new, returning, dwell_ms,           stats_ttl_days
                                    dwell_visits (anonymous counters)
``P:{S}:day:D:uv``          set     persons with a visit starting on D          history_ttl_days
``P:{S}:day:D:members``     set     member ids with a visit starting on D       history_ttl_days
``P:{S}:arrivals``          stream  member arrivals (member_id, camera_id,      history_ttl_days
                                    at_ms, event_id), ~arrivals_maxlen long
``P:stores``                set     every store id seen (purge walks it)        never
==========================  ======  ==========================================  ================

Expiry counts from the key's last write (Redis' clock: it bounds how long data is kept); a
person's visit list is also trimmed to ``history_ttl_days`` in event time.

Exactly once (the script's docstring, :mod:`.script`, has the details): a record at or below
its partition's offset in ``offsets`` is a redelivery; an event id in ``recent`` a copy
re-published at a new offset. Both are written in the script call that applies the event.
Sinks before these two keys wrote ``P:{S}:seen:<event id>`` per event (7 days); the script still
honours those while ``legacy_seen_keys`` is on, and they expire by themselves.

Definitions (all in event time, ``captured_at``; the camera does not matter):

- A *visit* of a person to a store starts with an event more than ``visit_gap_seconds`` after
  the end of their latest visit (or their first event). An event within a gap of a visit's span
  joins it, even out of order, and may move its start earlier; late events never merge two
  recorded visits. A visit belongs to the local day it started on, also when it runs past
  midnight.
- *PV* of day D: visits started on D. *UV*: distinct persons with a visit started on D (an exact
  set; UV ≤ PV). *members*: member ids among them.
- *new* / *returning*: each UV person of D is exactly one of the two (new + returning = UV). New:
  no visit of theirs to this store started on an earlier day (within the history retention);
  returning: one did. Decided when their first visit of D is applied, and corrected when a visit
  on an earlier day is applied after it (a store's cameras go through different detectors, so
  its events can arrive out of order across days): D's visitor then turns returning.
- *dwell* of a visit: the end of its last event minus the start of its first. An event is an
  instant (``captured_at``), or for a person's pass through a video camera's view the span
  from ``captured_at`` to ``last_seen``. A visit of one instant has no measurable dwell and is
  left out of the average (``dwell_visits`` counts the visits with two or more events or a
  span; ``dwell_ms`` sums their dwell), so the average is not dragged to zero by people who
  passed one camera once.

Aggregate counters hold no identity and survive erasure and the expiry of the day sets.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Final, cast
from zoneinfo import ZoneInfo

import redis

from facestream.runtime import redis_clients
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import MatchEvent
from facestream.services.sink.script import APPLY_LUA
from facestream.services.sink.settings import SinkSettings

log = logging.getLogger(__name__)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_DAY_SECONDS: Final = 24 * 3600
ERASE_GUARD_SECONDS: Final = 7 * _DAY_SECONDS
"""How long an erasure marker drops older events; covers the default retention of matches.v1."""


def check_prefix(prefix: str) -> str:
    """``prefix`` if usable: braces in it would become the hash tag instead of the store."""
    if not prefix or "{" in prefix or "}" in prefix:
        raise ValueError(f"redis prefix {prefix!r} must be non-empty and free of braces")
    return prefix


@dataclass(frozen=True)
class StoreKeys:
    """Key names of one store (see the module docstring)."""

    prefix: str
    store: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.store}}}"

    def seen(self, event_id: str) -> str:
        """The per-event key of earlier sinks (read, never written: see :mod:`.script`)."""
        return f"{self.base}:seen:{event_id}"

    @property
    def offsets(self) -> str:
        return f"{self.base}:offsets"

    @property
    def recent(self) -> str:
        return f"{self.base}:recent"

    def visits(self, person: str) -> str:
        return f"{self.base}:visits:{person}"

    def index(self, person: str) -> str:
        return f"{self.base}:keys:{person}"

    def erased(self, person: str) -> str:
        return f"{self.base}:erased:{person}"

    def day(self, day: str) -> str:
        return f"{self.base}:day:{day}"

    def day_uv(self, day: str) -> str:
        return f"{self.day(day)}:uv"

    def day_members(self, day: str) -> str:
        return f"{self.day(day)}:members"

    @property
    def arrivals(self) -> str:
        return f"{self.base}:arrivals"


def stores_key(prefix: str) -> str:
    """The registry of store ids (no hash tag: it spans stores)."""
    return f"{prefix}:stores"


def person_of(event: MatchEvent) -> str:
    """The person an event is about; ValueError when the event does not name one."""
    if event.kind == "member":
        if not event.member_id:
            raise ValueError("a member match without member_id")
        return f"m:{event.member_id}"
    if not event.face_id:
        raise ValueError(f"a {event.kind} match without face_id")
    return f"f:{event.face_id}"


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, exactly (no float rounding)."""
    return (moment - _EPOCH) // _MS


def local_day(moment: datetime, zone: ZoneInfo) -> tuple[str, int]:
    """The local date of ``moment`` in ``zone`` and the epoch ms at which that day starts."""
    day = moment.astimezone(zone).date()
    # Zones that skip midnight on a DST change resolve it to the nearest real instant; being an
    # hour off there only matters for "returning" on that one day.
    start = datetime.combine(day, time(0), tzinfo=zone)
    return day.isoformat(), epoch_ms(start)


@dataclass(frozen=True)
class Position:
    """Where a record was read: the partition whose applied offset the script keeps."""

    topic: str
    partition: int
    offset: int

    @property
    def field(self) -> str:
        """The record's field in the store's ``offsets`` hash (topic names have no ``:``)."""
        return f"{self.topic}:{self.partition}"


@dataclass(frozen=True)
class Plan:
    """Everything the apply script needs for one event; built without touching Redis."""

    store: str
    event_id: str
    keys: tuple[str, ...]
    """The event's own keys (``KEYS_PER_EVENT``)."""
    args: tuple[str | int, ...]
    """The event's own arguments (``ARGS_PER_EVENT``)."""
    common: tuple[str | int, ...]
    """The arguments shared by a store's events (settings): the head of ``ARGV``."""


def plan(
    event: MatchEvent, sink: SinkSettings, prefix: str, position: Position | None = None
) -> Plan:
    """The script arguments that apply ``event``, read at ``position`` (None: not from Kafka,
    deduplicated by event id only). ValueError for an event without a person."""
    person = person_of(event)
    keys = StoreKeys(check_prefix(prefix), event.store_id)
    day, day_start = local_day(event.captured_at, sink.zone_for(event.store_id))
    return Plan(
        store=event.store_id,
        event_id=event.event_id,
        keys=(
            keys.seen(event.event_id),
            keys.visits(person),
            keys.index(person),
            keys.day(day),
            keys.day_uv(day),
            keys.day_members(day),
            keys.erased(person),
        ),
        args=(
            epoch_ms(event.captured_at),
            day,
            day_start,
            person,
            event.member_id if event.kind == "member" and event.member_id else "",
            event.camera_id,
            event.event_id,
            position.field if position else "",
            position.offset if position else -1,
            epoch_ms(event.last_seen or event.captured_at),
        ),
        common=(
            sink.visit_gap_seconds * 1000,
            sink.dedup_ttl_days * _DAY_SECONDS,
            sink.history_ttl_days * _DAY_SECONDS,
            sink.stats_ttl_days * _DAY_SECONDS,
            sink.arrivals_maxlen,
            keys.day(""),
            sink.dedup_window_events,
            1 if sink.legacy_seen_keys else 0,
        ),
    )


@dataclass(frozen=True)
class Outcome:
    """What applying one event did."""

    status: int
    """1 applied, 0 duplicate (event id applied before), -1 suppressed (person erased since),
    -2 redelivered (at or below its partition's applied offset)."""
    visit_started: bool

    @property
    def applied(self) -> bool:
        return self.status == 1


class Applier:
    """Applies planned events to Redis: one script call per store, one pipelined round trip
    per batch (on a Redis Cluster, one per node)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = check_prefix(prefix)
        # Loaded on first use: a server that does not know the script answers NOSCRIPT.
        self.sha = hashlib.sha1(APPLY_LUA.encode()).hexdigest()
        self._registered: set[str] = set()

    def apply(self, plans: Sequence[Plan]) -> list[Outcome]:
        """Apply ``plans`` in order. Raises on any Redis error; replaying is always safe."""
        if not plans:
            return []
        # A store's events go in one call, in their order: all of its part of the batch or
        # none, and never a later offset of a partition before an earlier one.
        groups: dict[tuple[str, tuple[str | int, ...]], list[int]] = {}
        for i, p in enumerate(plans):
            groups.setdefault((p.store, p.common), []).append(i)
        try:
            replies = self._send(plans, groups)
        except redis.exceptions.NoScriptError:
            # The first batch, or a node that restarted or failed over: load the script (on
            # every primary of a cluster) and send the batch again, which the offsets and
            # event ids make harmless for any part that did get applied.
            self.sha = self.client.script_load(APPLY_LUA)
            replies = self._send(plans, groups)
        outcomes: list[Outcome | None] = [None] * len(plans)
        for indexes, reply in zip(groups.values(), replies, strict=True):
            flat = [int(x) for x in reply]
            for j, i in enumerate(indexes):
                outcomes[i] = Outcome(flat[2 * j], bool(flat[2 * j + 1]))
        return [o for o in outcomes if o is not None]

    def _send(
        self, plans: Sequence[Plan], groups: dict[tuple[str, tuple[str | int, ...]], list[int]]
    ) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        # The registry lets purge find every store; registering before applying means a store
        # with data is always listed.
        new_stores = sorted({p.store for p in plans} - self._registered)
        if new_stores:
            pipe.sadd(stores_key(self.prefix), *new_stores)
        for (store, common), indexes in groups.items():
            keys = StoreKeys(self.prefix, store)
            call_keys = [keys.offsets, keys.recent, keys.arrivals]
            call_args: list[str | int] = list(common)
            for i in indexes:
                call_keys += plans[i].keys
                call_args += plans[i].args
            # Queued as a plain command: redis-py's cluster pipeline refuses its evalsha
            # method (a script of several slots would fail), and these keys share one slot.
            queue: Callable[..., object] = pipe.execute_command
            queue("EVALSHA", self.sha, len(call_keys), *call_keys, *call_args)
        results = pipe.execute()
        self._registered.update(new_stores)
        return list(results[1:] if new_stores else results)


def redis_client(settings: PipelineSettings) -> redis.Redis:
    """A client of the pipeline's Redis that returns text."""
    return redis_clients.redis_client(settings, decode_responses=True)


def purge(
    subject: str,
    settings: PipelineSettings,
    *,
    stores: Iterable[str] | None = None,
    client: redis.Redis | None = None,
    now: datetime | None = None,
) -> int:
    """Erase a member id or a face id from every store (or from ``stores``); the number of keys
    changed. Removes the visit history, the person's membership of every day set, the member's
    arrivals, and marks the person erased so that events captured before now, still in flight,
    cannot bring them back. Counters without identity (PV, UV, dwell) are kept."""
    prefix = check_prefix(settings.redis_prefix)
    r = client or redis_client(settings)
    if stores is None:
        stores = cast(set[str], r.smembers(stores_key(prefix)))
    store_ids = sorted(stores)
    erased_at = epoch_ms(now or datetime.now(UTC))
    touched = 0
    for store in store_ids:
        keys = StoreKeys(prefix, store)
        for person in (f"m:{subject}", f"f:{subject}"):
            touched += _purge_person(r, keys, person, subject, erased_at)
        touched += _purge_arrivals(r, keys, subject)
    log.info("erased %s: %d keys changed in %d stores", subject, touched, len(store_ids))
    return touched


def traces(
    subject: str,
    settings: PipelineSettings,
    *,
    stores: Iterable[str] | None = None,
    client: redis.Redis | None = None,
) -> dict[str, int]:
    """What Redis still holds that names a member id or a face id, in every store (or in
    ``stores``): counts of ``visits`` keys, ``day_sets`` that list them and ``arrivals``
    entries (all 0 once :func:`purge` ran), and ``erasure_markers`` (set by it). Reads only."""
    prefix = check_prefix(settings.redis_prefix)
    r = client or redis_client(settings)
    if stores is None:
        stores = cast(set[str], r.smembers(stores_key(prefix)))
    found = {"visits": 0, "day_sets": 0, "arrivals": 0, "erasure_markers": 0}
    for store in sorted(stores):
        keys = StoreKeys(prefix, store)
        for person in (f"m:{subject}", f"f:{subject}"):
            found["visits"] += int(r.exists(keys.visits(person)))
            found["erasure_markers"] += int(r.exists(keys.erased(person)))
            for day_set in cast(set[str], r.smembers(keys.index(person))):
                found["day_sets"] += int(bool(r.sismember(day_set, person)))
                found["day_sets"] += int(bool(r.sismember(day_set, subject)))
        found["arrivals"] += len(_arrivals_of(r, keys, subject))
    return found


def _arrivals_of(r: redis.Redis, keys: StoreKeys, member_id: str) -> list[str]:
    """Ids of the member's entries in the store's capped arrivals stream."""
    found: list[str] = []
    start = "-"
    while True:
        chunk = cast(list[Any], r.xrange(keys.arrivals, min=start, max="+", count=1000))
        found += [eid for eid, fields in chunk if fields.get("member_id") == member_id]
        if len(chunk) < 1000:
            return found
        start = "(" + chunk[-1][0]


def _purge_person(r: redis.Redis, keys: StoreKeys, person: str, subject: str, at: int) -> int:
    index = keys.index(person)
    day_sets = sorted(cast(set[str], r.smembers(index)))
    # One MULTI on the store's slot: the person disappears from all of it at once.
    pipe = r.pipeline(transaction=True)
    for key in day_sets:
        pipe.srem(key, person, subject)
    pipe.delete(keys.visits(person), index)
    pipe.set(keys.erased(person), at, ex=ERASE_GUARD_SECONDS)
    results = pipe.execute()
    removed = sum(1 for n in results[: len(day_sets)] if int(n) > 0)
    return removed + int(results[len(day_sets)])


def _purge_arrivals(r: redis.Redis, keys: StoreKeys, member_id: str) -> int:
    """Delete the member's entries from the store's capped arrivals stream (1 if any)."""
    doomed = _arrivals_of(r, keys, member_id)
    if doomed:
        r.xdel(keys.arrivals, *doomed)
    return 1 if doomed else 0
