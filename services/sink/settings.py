"""Settings of the sink, read from ``FACESTREAM_SINK_*`` environment variables.

Built once in the sink's entry point (and by ``facestream stats``), never at import time. The
shared settings (Kafka, Redis, prefixes) stay in :class:`~facestream.runtime.settings.
PipelineSettings`; this class holds only what the sink decides: how visits are cut, which
local day an event belongs to, and how long identity-bearing data is kept.
"""

from __future__ import annotations

from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX: Final = "FACESTREAM_SINK_"


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r}") from exc


class SinkSettings(BaseSettings):
    """Every field can be set as ``FACESTREAM_SINK_<NAME>``; mappings are JSON."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    visit_gap_seconds: int = Field(default=1800, ge=1, le=24 * 3600)
    """A person's next event more than this after their last one (event time) starts a visit."""
    timezone: str = "UTC"
    """IANA zone of every store not listed in ``store_timezones``: daily buckets are local days."""
    store_timezones: dict[str, str] = Field(default_factory=dict)
    """Store id → IANA zone, e.g. ``{"7": "America/New_York"}``."""
    dedup_ttl_days: int = Field(default=7, ge=1, le=365)
    """How long a store's deduplication state (applied offsets, recent event ids) outlives its
    last event. Must cover the longest redelivery of matches.v1 (its retention)."""
    dedup_window_events: int = Field(default=10_000, ge=100, le=10_000_000)
    """Event ids remembered per store: a copy of an event re-published at a new offset (a
    matcher handling a batch again, at most FACESTREAM_MATCHER_MAX_BATCH of a store's events)
    is dropped when it comes within this many of the store's events after the original. Redis
    memory is bounded by stores x this, not by traffic."""
    legacy_seen_keys: bool = True
    """Also drop an event whose per-event ``seen:`` key, written by sinks before the offsets,
    exists. Those keys expire within dedup_ttl_days of the upgrade; then this can be off."""
    history_ttl_days: int = Field(default=90, ge=1, le=3650)
    """Retention of everything that names a person (visit history, day sets, arrivals): data
    derived from biometrics is kept only as long as the statistics need it."""
    stats_ttl_days: int = Field(default=730, ge=0, le=36500)
    """Retention of the anonymous daily counters (PV, UV, dwell); 0 keeps them forever."""
    arrivals_maxlen: int = Field(default=10_000, ge=100)
    """Approximate cap of each store's member-arrivals stream."""
    max_batch: int = Field(default=200, ge=1, le=10_000)
    """Records per poll; every batch is one Redis round trip."""
    group_instance_id: str | None = Field(default=None, min_length=1, max_length=200)
    """Static group membership (KIP-345): a sink restarted with the same id gets its partitions
    back at once instead of waiting out its dead predecessor's session (45 s). Give every
    replica its own stable id, e.g. the StatefulSet pod name; two live sinks must never share
    one (the broker fences the older)."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        _zone(value)
        return value

    @field_validator("store_timezones")
    @classmethod
    def _known_zones(cls, value: dict[str, str]) -> dict[str, str]:
        for store, name in value.items():
            try:
                _zone(name)
            except ValueError as exc:
                raise ValueError(f"store {store!r}: {exc}") from None
        return value

    def zone_for(self, store_id: str) -> ZoneInfo:
        """The time zone whose calendar days bucket ``store_id``'s statistics."""
        return _zone(self.store_timezones.get(store_id, self.timezone))
