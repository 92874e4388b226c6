"""Settings every pipeline process shares, from ``FACESTREAM_*`` environment variables.

Each service adds its own class with its own prefix (``FACESTREAM_DETECTOR_*``, ...). Both are
built in the service's ``__main__``, never at import time.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from facestream.runtime.kafka_clients import KafkaSettings
from facestream.runtime.redis_clients import RedisSettings
from facestream.runtime.topics import Topics


class PipelineSettings(KafkaSettings, RedisSettings):
    """Where Kafka and Redis are and how to reach them (``FACESTREAM_KAFKA_*``,
    ``FACESTREAM_REDIS_*``: :mod:`.kafka_clients`, :mod:`.redis_clients`), which topics, and
    where metrics are served."""

    model_config = SettingsConfigDict(env_prefix="FACESTREAM_", extra="ignore", frozen=True)

    topic_prefix: str = ""
    """Prepended to every topic name: lets several pipelines (or tests) share one broker."""
    group_prefix: str = "facestream"
    """Consumer groups are ``{group_prefix}-{stage}``."""
    redis_prefix: str = "fs"
    """First part of every Redis key (``fs:{store}:...``)."""
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    """Port of a worker's /metrics, /healthz and /readyz; 0 serves none (tests run many
    workers on one machine)."""
    liveness_seconds: float = Field(default=180.0, gt=0)
    """/healthz fails when the poll loop has not made progress for this long. Above the
    slowest legitimate pause: one frame with every fallback (~20 s) and a matcher rebuilding
    its shards on assignment (up to FACESTREAM_MATCHER_STARTUP_TIMEOUT, 120 s)."""
    log_level: str = "INFO"
    dlq_keep_payload: bool = False
    """Dead letters carry the failed record's value (base64, up to 1 MiB). Off by default: on
    frames.v1 and encodings.v1 that value is a face image or an encoding (docs/privacy.md)."""
    max_ahead_seconds: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    """Latest event time accepted, in seconds after the record's Kafka timestamp (a camera clock
    further ahead is dead-lettered; docs/events.md, "Event times")."""
    retry_first_seconds: float = Field(default=0.2, gt=0, le=60)
    """First wait before retrying a record after a transient error; it doubles each time..."""
    retry_max_seconds: float = Field(default=30.0, gt=0, le=3600)
    """...up to this. Transient errors are retried without limit (docs/reliability.md)."""

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def group(self, stage: str) -> str:
        return f"{self.group_prefix}-{stage}"

    def to_env(self) -> dict[str, str]:
        """These settings as the environment variables a worker subprocess reads (unset ones
        left out; a password given as a value is passed as its value)."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"FACESTREAM_{name.upper()}"] = str(value)
        return env
