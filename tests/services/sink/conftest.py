"""The sink tests' Redis client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from facestream.runtime.settings import PipelineSettings
from facestream.services.sink.store import redis_client


@pytest.fixture
def client(pipeline: PipelineSettings) -> Iterator[redis.Redis]:
    """A text client of the pipeline's Redis (the sink's own); every key of the test's prefixes
    is deleted afterwards."""
    r = redis_client(pipeline)
    yield r
    for prefix in (pipeline.redis_prefix, pipeline.redis_prefix + "ref"):
        keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            r.delete(*keys)
    r.close()
