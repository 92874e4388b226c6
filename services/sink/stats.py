"""Reading a store's daily statistics: :func:`store_stats` and ``facestream stats``.

The definitions (visit, PV, UV, new/returning, dwell) are in :mod:`facestream.services.sink.store`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

import click
import redis
from pydantic import ValidationError

from facestream.runtime.settings import PipelineSettings
from facestream.services.sink.settings import SinkSettings
from facestream.services.sink.store import StoreKeys, check_prefix, redis_client


@dataclass(frozen=True)
class StoreStats:
    """One store's figures for one local day (definitions in :mod:`.store`)."""

    store: str
    date: str
    """The local day, ``YYYY-MM-DD``."""
    pv: int
    uv: int
    new: int
    returning: int
    members: tuple[str, ...]
    """Member ids seen that day, sorted."""
    dwell_seconds_avg: float | None
    """None when no visit of the day has a measurable dwell (two or more events)."""
    dwell_visits: int
    """How many visits the average dwell is over."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form that ``facestream stats --json`` and ``replay --json`` print."""
        return {
            "store": self.store,
            "date": self.date,
            "pv": self.pv,
            "uv": self.uv,
            "new": self.new,
            "returning": self.returning,
            "members": list(self.members),
            "dwell_seconds_avg": self.dwell_seconds_avg,
            "dwell_visits": self.dwell_visits,
        }


def store_stats(
    store: str,
    day: date | str,
    settings: PipelineSettings,
    *,
    client: redis.Redis | None = None,
) -> StoreStats:
    """PV, UV, new/returning, members and average dwell of ``store`` on the local ``day``.

    ``dwell_seconds_avg`` is None when no visit of that day has a measurable dwell (two or more
    events). ``members`` is empty once the day's identity data has expired; the counters remain.
    """
    day_text = day.isoformat() if isinstance(day, date) else date.fromisoformat(day).isoformat()
    keys = StoreKeys(check_prefix(settings.redis_prefix), store)
    r = client or redis_client(settings)
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(keys.day(day_text))
    pipe.smembers(keys.day_members(day_text))
    counters, members = cast(tuple[dict[str, str], set[str]], tuple(pipe.execute()))

    def count(field: str) -> int:
        return int(counters.get(field, 0))

    measured = count("dwell_visits")
    return StoreStats(
        store=store,
        date=day_text,
        pv=count("pv"),
        uv=count("uv"),
        new=count("new"),
        returning=count("returning"),
        members=tuple(sorted(members)),
        dwell_seconds_avg=round(count("dwell_ms") / measured / 1000, 3) if measured else None,
        dwell_visits=measured,
    )


def today_in(store: str, sink: SinkSettings) -> date:
    """Today's date in the store's time zone (wall clock: this is for people asking)."""
    return datetime.now(UTC).astimezone(sink.zone_for(store)).date()


def _table(stats: StoreStats) -> str:
    dwell = stats.dwell_seconds_avg
    rows = [
        ("store", stats.store),
        ("date", stats.date),
        ("visits (PV)", stats.pv),
        ("visitors (UV)", stats.uv),
        ("  new", stats.new),
        ("  returning", stats.returning),
        ("avg dwell", "-" if dwell is None else f"{dwell / 60:.1f} min ({stats.dwell_visits})"),
        ("members", ", ".join(stats.members) or "-"),
    ]
    return "\n".join(f"{name:<14} {value}" for name, value in rows)


@click.command("stats")
@click.option("--store", "store", required=True, help="Store id.")
@click.option(
    "--date",
    "day",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Local day (YYYY-MM-DD) [default: today in the store's time zone].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats_command(store: str, day: datetime | None, as_json: bool) -> None:
    """Visits, visitors, new/returning, members and dwell of one store on one day."""
    try:
        settings = PipelineSettings()
        sink = SinkSettings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid settings\n{exc}") from None
    wanted = day.date() if day is not None else today_in(store, sink)
    try:
        stats = store_stats(store, wanted, settings)
    except redis.RedisError as exc:
        raise click.ClickException(f"cannot read Redis: {exc}") from None
    click.echo(json.dumps(stats.as_dict()) if as_json else _table(stats))
