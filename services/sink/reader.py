"""The read side of the sink's Redis data for the store dashboard: :class:`StoreReader`.

The day's figures are :func:`~.stats.store_stats`' (the ones ``facestream stats --json``
prints); this module adds what the dashboard shows beside them: the visits of the day by
local hour, the latest of those visits, and the member arrivals stream. Definitions and the
key layout are in :mod:`facestream.services.sink.store`.

The hourly series and the visit list are read from the persons' visit histories, so they
cover what the history retention (and erasure) left: after an erasure their sum can be below
PV, whose counter holds no identity and is kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Final, cast
from zoneinfo import ZoneInfo

import redis

from facestream.runtime.settings import PipelineSettings
from facestream.services.sink.settings import SinkSettings
from facestream.services.sink.stats import StoreStats, store_stats, today_in
from facestream.services.sink.store import StoreKeys, check_prefix, redis_client, stores_key

STREAM_ID: Final = re.compile(r"^\d{1,20}-\d{1,20}$")
"""A Redis stream entry id, as a client may send it back (``Last-Event-ID``)."""
RECENT_VISITS: Final = 20
"""How many of the day's latest visits a day report lists."""
_DAY_MS: Final = 24 * 3600 * 1000


def _local(ms: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone)


@dataclass(frozen=True)
class Visit:
    """One visit of a person, from their visit history (see :mod:`.store`)."""

    person: str
    """``m:<member id>`` or ``f:<face id>``."""
    start_ms: int
    end_ms: int
    events: int

    @property
    def member_id(self) -> str | None:
        return self.person.removeprefix("m:") if self.person.startswith("m:") else None

    def as_dict(self, zone: ZoneInfo) -> dict[str, Any]:
        """JSON form; times in ``zone`` (the store's), ISO 8601 with their offset."""
        return {
            "kind": "member" if self.member_id else "visitor",
            "member_id": self.member_id,
            "start": _local(self.start_ms, zone).isoformat(timespec="seconds"),
            "end": _local(self.end_ms, zone).isoformat(timespec="seconds"),
            "events": self.events,
            # Same rule as the day's average: one event has no measurable dwell.
            "dwell_seconds": (self.end_ms - self.start_ms) / 1000 if self.events >= 2 else None,
        }


@dataclass(frozen=True)
class StoreDay:
    """A store's local day for the dashboard: the stats, visits per hour, the latest visits."""

    stats: StoreStats
    timezone: str
    hourly: tuple[int, ...]
    """Visits started in each local hour 0-23 (a repeated DST hour counts into one)."""
    recent: tuple[Visit, ...]
    """The day's visits that were seen last, latest first (at most :data:`RECENT_VISITS`)."""

    def as_dict(self) -> dict[str, Any]:
        """``facestream stats --json``'s object plus ``timezone``, ``hourly`` and ``recent``."""
        zone = ZoneInfo(self.timezone)
        return {
            **self.stats.as_dict(),
            "timezone": self.timezone,
            "hourly": list(self.hourly),
            "recent": [v.as_dict(zone) for v in self.recent],
        }


@dataclass(frozen=True)
class Arrival:
    """One entry of a store's member arrivals stream."""

    id: str
    """The stream entry id: it orders arrivals and resumes a feed (SSE ``Last-Event-ID``)."""
    member_id: str
    camera_id: str
    at_ms: int
    event_id: str
    timezone: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "member_id": self.member_id,
            "camera_id": self.camera_id,
            "at": _local(self.at_ms, ZoneInfo(self.timezone)).isoformat(timespec="seconds"),
            "event_id": self.event_id,
        }


@dataclass(frozen=True)
class StoreInfo:
    """A store the sink has data of, with its time zone and the current local date there."""

    store: str
    timezone: str
    today: date

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "timezone": self.timezone, "today": self.today.isoformat()}


class StoreReader:
    """Reads what the sink wrote; every method is one or two Redis round trips."""

    def __init__(
        self,
        settings: PipelineSettings,
        sink: SinkSettings,
        *,
        client: redis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.prefix = check_prefix(settings.redis_prefix)
        self.client = client or redis_client(settings)

    def _zone_name(self, store: str) -> str:
        return self.sink.zone_for(store).key

    def stores(self) -> list[StoreInfo]:
        """Every store with data, sorted by id."""
        ids = sorted(cast(set[str], self.client.smembers(stores_key(self.prefix))))
        return [StoreInfo(s, self._zone_name(s), today_in(s, self.sink)) for s in ids]

    def has_store(self, store: str) -> bool:
        return bool(self.client.sismember(stores_key(self.prefix), store))

    def day(self, store: str, day: date) -> StoreDay:
        """The dashboard's view of ``store`` on its local ``day``."""
        stats = store_stats(store, day, self.settings, client=self.client)
        zone = self.sink.zone_for(store)
        visits = self._visits(store, day, zone)
        hourly = [0] * 24
        for v in visits:
            hourly[_local(v.start_ms, zone).hour] += 1
        recent = sorted(visits, key=lambda v: (v.end_ms, v.start_ms), reverse=True)
        return StoreDay(stats, zone.key, tuple(hourly), tuple(recent[:RECENT_VISITS]))

    def _visits(self, store: str, day: date, zone: ZoneInfo) -> list[Visit]:
        """Visits that started on ``day``: of the persons in the day's UV set, those whose
        visit carries the day (a visit belongs to the local day it started on)."""
        keys = StoreKeys(self.prefix, store)
        text = day.isoformat()
        persons = sorted(cast(set[str], self.client.smembers(keys.day_uv(text))))
        if not persons:
            return []
        start = int(datetime.combine(day, time(0), tzinfo=zone).timestamp() * 1000)
        # A day is 23 to 25 hours long; the margin is harmless as the day field decides.
        low, high = start - _DAY_MS, start + 2 * _DAY_MS
        pipe = self.client.pipeline(transaction=False)
        for person in persons:
            pipe.zrangebyscore(keys.visits(person), low, high)
        found: list[Visit] = []
        for person, members in zip(persons, pipe.execute(), strict=True):
            for member in cast(list[str], members):
                s, e, d, n = member.split("|")
                if d == text:
                    found.append(Visit(person, int(s), int(e), int(n)))
        return found

    def arrivals(self, store: str, after: str | None, count: int) -> Sequence[Arrival]:
        """Member arrivals in stream order: those after the entry id ``after``, or (None) the
        latest ``count``. ValueError when ``after`` is not an entry id."""
        key = StoreKeys(self.prefix, store).arrivals
        if after is not None and not STREAM_ID.match(after):
            raise ValueError(f"not a stream entry id: {after!r}")
        if after is None:
            rows = list(reversed(cast(list[Any], self.client.xrevrange(key, count=count))))
        else:
            rows = cast(list[Any], self.client.xrange(key, min=f"({after}", count=count))
        zone = self._zone_name(store)
        return [
            Arrival(
                id=entry_id,
                member_id=fields.get("member_id", ""),
                camera_id=fields.get("camera_id", ""),
                at_ms=int(fields.get("at_ms", 0)),
                event_id=fields.get("event_id", ""),
                timezone=zone,
            )
            for entry_id, fields in rows
        ]
