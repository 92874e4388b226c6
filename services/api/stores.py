"""What the dashboard needs from the pipeline's store data: the :class:`StoreData` protocol.

The API does not know how the sink keeps its data (no service imports another); whoever starts
the API passes an object with these methods (the sink's
:class:`~facestream.services.sink.reader.StoreReader` is one, wired by ``facestream serve``).
Every method may raise ``redis.RedisError`` (answered with 503) and is called from a worker
thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, Protocol


class Record(Protocol):
    """A result with a JSON form."""

    def as_dict(self) -> dict[str, Any]: ...


class ArrivalRecord(Record, Protocol):
    """One member arrival; ``id`` orders arrivals and resumes a feed."""

    @property
    def id(self) -> str: ...


class StoreData(Protocol):
    """Read access to the pipeline's per-store figures and member arrivals."""

    def stores(self) -> Sequence[Record]:
        """Every store with data: ``{"store", "timezone", "today"}`` each."""
        ...

    def has_store(self, store: str) -> bool: ...

    def day(self, store: str, day: date) -> Record:
        """The figures of ``facestream stats --json`` plus ``timezone``, ``hourly``, ``recent``."""
        ...

    def arrivals(self, store: str, after: str | None, count: int) -> Sequence[ArrivalRecord]:
        """Arrivals after the id ``after`` in order, or (None) the latest ``count``.
        ValueError for a malformed ``after``."""
        ...
