"""Settings of the matcher, read from ``FACESTREAM_MATCHER_*`` environment variables.

Built in ``__main__`` (or by a test), never at import time. Kafka, Redis and topic names come
from :class:`facestream.runtime.settings.PipelineSettings`; this class holds what only the
matcher decides: the index type and the open-set thresholds of both tiers, the neighbour stores
searched as replicas, and the bounds on its startup reads.
"""

from __future__ import annotations

import os
import socket
from typing import Final

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from facestream.core.gallery import DEFAULT_MARGIN, DEFAULT_THRESHOLD, IndexType

ENV_PREFIX: Final = "FACESTREAM_MATCHER_"


def default_matcher_id() -> str:
    """``hostname-pid``: unique among live processes, and readable in erasure reports."""
    return f"{socket.gethostname()}-{os.getpid()}"


class MatcherSettings(BaseSettings):
    """Configuration of one matcher process. Every field is ``FACESTREAM_MATCHER_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    index: IndexType = "flat"
    """Faiss index of both tiers (flat, ivf, ivfsq8, hnsw); IVF stays exact until trained."""
    threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0, le=2)
    """Largest distance at which a face is taken for a member (dlib Euclidean unit)."""
    margin: float = Field(default=DEFAULT_MARGIN, ge=0, le=2)
    """Lead a member needs over the nearest other member."""
    # Visitors use the members' calibration: a store's shard is also an open-set 1:N search,
    # and a false "returning" merges two strangers' visits just as a false member would.
    visitor_threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0, le=2)
    visitor_margin: float = Field(default=DEFAULT_MARGIN, ge=0, le=2)
    neighbours: dict[str, list[str]] = Field(default_factory=dict)
    """Store -> stores whose visitors it also recognises (JSON: ``{"s1": ["s2"]}``)."""
    max_batch: int = Field(default=100, ge=1, le=10_000)
    matcher_id: str = Field(default_factory=default_matcher_id, min_length=1, max_length=200)
    """Names this process in the heartbeat set and in erasure acknowledgements."""
    startup_timeout: float = Field(default=120.0, gt=0)
    """Longest wait for reading members.v1 at start, or a partition's changelog on assignment;
    past it the matcher stops rather than decide with half its state."""
    heartbeat_seconds: float = Field(default=5.0, gt=0, le=60)
    """How often the matcher tells Redis it is alive (erase waits for live matchers only)."""

    @field_validator("neighbours")
    @classmethod
    def _no_self_neighbours(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        # A store is always searched; listing it as its own neighbour would search it twice.
        return {
            store: sorted({n for n in near if n and n != store})
            for store, near in value.items()
            if store
        }
