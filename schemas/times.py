"""Which event times a message may carry: the policy against wrong camera clocks.

``captured_at`` is stamped by the camera, and everything downstream trusts it: the sink files a
visit under it, trims a person's history relative to it and compares it with erasure markers.
A camera whose clock was reset to 1970 or set decades ahead would break or corrupt all of that,
so every time in a message is checked when it is decoded:

* not before :attr:`TimeBounds.earliest` (2000-01-01 UTC): nothing in facestream's data is
  older, and it keeps epoch milliseconds positive (the sink's script reads them as digits);
* not more than :attr:`TimeBounds.max_ahead` (10 minutes) after the record's *reference
  time*: the Kafka timestamp of the record being handled, or now when that is in the future
  or unknown. Using the record's timestamp keeps the decision the same on every replay of a
  record; taking the earlier of it and now stops a producer that stamps its records decades
  ahead from vouching for its own frames.

Other times (``first_seen``, ``enrolled_at``, ``failed_at``) are only checked against the
floor. Old times are accepted: a replay of last month's frames is legitimate input. The runner sets
the reference around each record (:func:`checking_times`); code that builds or decodes
messages outside a runner is checked against now with the default bounds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD: Final = timedelta(minutes=10)


@dataclass(frozen=True)
class TimeBounds:
    """The event times accepted, relative to a record's reference time."""

    earliest: datetime = EARLIEST
    max_ahead: timedelta = MAX_AHEAD

    def check(self, value: datetime, reference: datetime) -> None:
        """Raise ``ValueError`` (a validation error in a model) when ``value`` is out of bounds."""
        if value < self.earliest:
            raise ValueError(
                f"time {value.isoformat()} is before {self.earliest.date().isoformat()}: "
                "the camera's clock is not set"
            )
        latest = reference + self.max_ahead
        if value > latest:
            raise ValueError(
                f"time {value.isoformat()} is more than {self.max_ahead} ahead of "
                f"{reference.isoformat()}: the camera's clock is ahead"
            )


DEFAULT_BOUNDS: Final = TimeBounds()


@dataclass(frozen=True)
class _Reference:
    at: datetime | None
    bounds: TimeBounds


_reference: ContextVar[_Reference | None] = ContextVar("facestream_time_reference", default=None)


def reference_time(timestamp_ms: int | None) -> datetime | None:
    """The reference time of a Kafka record from its timestamp (None: unknown)."""
    if timestamp_ms is None or timestamp_ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


@contextmanager
def checking_times(
    reference: datetime | None, bounds: TimeBounds = DEFAULT_BOUNDS
) -> Iterator[None]:
    """Check the times of messages decoded or built inside against ``reference`` (the record's
    timestamp; None: now) and ``bounds``."""
    token = _reference.set(_Reference(reference, bounds))
    try:
        yield
    finally:
        _reference.reset(token)


def check_aware(value: datetime) -> datetime:
    """``value`` if it carries a UTC offset and is not before :data:`EARLIEST`."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("times must carry a UTC offset (event time is compared across stores)")
    if value < EARLIEST:
        raise ValueError(f"time {value.isoformat()} is before {EARLIEST.date().isoformat()}")
    return value


def check_event_time(value: datetime) -> datetime:
    """``value`` if it is an aware time within the bounds in force, else ``ValueError``.

    For the event time of the record being handled (``captured_at``) only: other times a
    handler reads (a visitor's ``first_seen`` in the changelog) may be later than an old
    record's timestamp and are checked by :func:`check_aware` alone."""
    check_aware(value)
    current = _reference.get()
    bounds = current.bounds if current is not None else DEFAULT_BOUNDS
    now = datetime.now(UTC)
    given = current.at if current is not None else None
    bounds.check(value, now if given is None or given > now else given)
    return value
