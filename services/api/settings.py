"""Settings of the HTTP face service, read from ``FACESTREAM_API_*`` environment variables.

Built once in ``__main__`` (or by whoever calls :func:`~.server.serve`), never at
import time. The service refuses to start without an API key that looks like a real secret.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from facestream.core.verification import DEFAULT_VERIFY_THRESHOLD

ENV_PREFIX: Final = "FACESTREAM_API_"
MIN_KEY_LENGTH: Final = 16
MIN_KEY_DISTINCT_CHARS: Final = 6
# Fragments of the placeholders that templates, READMEs and compose files ship with. A key that
# contains one was copied from an example, not generated.
PLACEHOLDER_FRAGMENTS: Final = (
    "changeme",
    "change-me",
    "change_me",
    "changethis",
    "replaceme",
    "replace-me",
    "yourapikey",
    "your-api-key",
    "your_api_key",
    "placeholder",
    "example",
    "password",
)
_KEY_HINT: Final = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def key_problem(key: str) -> str | None:
    """Why ``key`` is not safe to use as an API key, or None when it is acceptable."""
    if not key:
        return "is empty"
    if len(key) < MIN_KEY_LENGTH:
        return f"is {len(key)} characters long; at least {MIN_KEY_LENGTH} are required"
    lowered = key.lower()
    for fragment in PLACEHOLDER_FRAGMENTS:
        if fragment in lowered:
            return f"contains the placeholder {fragment!r}"
    if len(set(key)) < MIN_KEY_DISTINCT_CHARS:
        return f"uses fewer than {MIN_KEY_DISTINCT_CHARS} distinct characters"
    return None


class ApiSettings(BaseSettings):
    """Configuration of one API process. Every field can be set as ``FACESTREAM_API_<NAME>``."""

    # hide_input_in_errors: a validation error would otherwise print the raw key it refused.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        populate_by_name=True,
        frozen=True,
        hide_input_in_errors=True,
    )

    # The variables are FACESTREAM_API_KEY and FACESTREAM_API_KEYS, not ..._API_API_KEY.
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("api_key", f"{ENV_PREFIX}KEY")
    )
    """The API key clients send in ``X-API-Key``."""
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("api_keys", f"{ENV_PREFIX}KEYS")
    )
    """Several accepted keys (for rotation): a JSON list or comma-separated."""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    gallery_path: Path | None = None
    """Gallery file. When set, it is loaded at start, and every enrollment and erasure is
    written back to it atomically before the request returns; identities erased from it by
    another process (``facestream erase --gallery``) are dropped from memory too
    (:mod:`.galleryfile`)."""
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Largest accepted image file, in bytes."""
    max_pixels: int = Field(default=25_000_000, ge=10_000)
    """Largest accepted image, in pixels (width x height); 25e6 admits a 24 MP camera photo."""
    max_photos_per_enroll: int = Field(default=20, ge=1, le=200)
    threshold: float | None = Field(default=None, gt=0.0, le=2.0)
    """Overrides the gallery's match threshold (Euclidean distance) when set."""
    margin: float | None = Field(default=None, ge=0.0, le=2.0)
    """Overrides the gallery's required margin over the next identity when set."""
    verify_threshold: float = Field(default=DEFAULT_VERIFY_THRESHOLD, gt=0.0, le=2.0)
    """/verify (1:1): largest distance at which two photos are the same person. Not the 1:N
    threshold: one comparison has no gallery of other people to be confused with
    (docs/accuracy.md, "1:1 verification")."""
    policy_dir: Path | None = None
    """A folder written by ``facestream calibrate``: /recognize then decides with its member
    policy and cohort (normalised, see facestream/core/policy.py) instead of the threshold and
    margin, as the pipeline's matcher does."""
    log_level: str = "INFO"
    session_secret: SecretStr | None = None
    """Signs the dashboard's login cookie. Unset: a random secret per process, so sessions end
    when the process restarts and are not valid on another replica."""
    session_hours: float = Field(default=12.0, gt=0.0, le=24.0 * 30)
    """How long a dashboard login lasts."""
    feed_max_streams: int = Field(default=32, ge=1, le=1000)
    """Live arrival feeds (server-sent events) open at once; more are refused with 503."""
    feed_max_seconds: float = Field(default=300.0, gt=0.0, le=3600.0)
    """A feed is closed after this long; the browser reconnects and resumes where it was."""
    feed_poll_seconds: float = Field(default=1.0, ge=0.05, le=30.0)
    """How often a feed looks for new arrivals."""
    rate_per_minute: float = Field(default=120.0, ge=0.0)
    """Requests per minute per API key (a dashboard login: per client address), on average;
    over it the answer is 429 with ``Retry-After``. 0 turns the limit off. Per process."""
    rate_burst: int = Field(default=60, ge=1)
    """Requests a key may send at once before ``rate_per_minute`` applies."""
    login_attempts_per_minute: float = Field(default=10.0, ge=0.0)
    """Wrong API keys and dashboard logins per minute per client address (bursts of as many),
    to slow key guessing. 0 turns the limit off."""
    rate_limit_clients: int = Field(default=10_000, ge=1, le=1_000_000)
    """Keys and addresses whose buckets are kept in memory, per limit; beyond it the least
    recently seen are forgotten."""

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        # Environment variables hold one string: accept a JSON list or a comma-separated list.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _require_safe_keys(self) -> ApiSettings:
        named: list[tuple[str, SecretStr]] = []
        if self.api_key is not None:
            named.append((f"{ENV_PREFIX}KEY", self.api_key))
        named += [(f"{ENV_PREFIX}KEYS[{i}]", key) for i, key in enumerate(self.api_keys)]
        if not named:
            raise ValueError(
                f"no API key configured: set {ENV_PREFIX}KEY (or {ENV_PREFIX}KEYS); " + _KEY_HINT
            )
        for label, key in named:
            # The message names the setting, never the key itself: it ends up in logs.
            problem = key_problem(key.get_secret_value().strip())
            if problem is not None:
                raise ValueError(f"{label} is unsafe: it {problem}; {_KEY_HINT}")
        if self.session_secret is not None:
            problem = key_problem(self.session_secret.get_secret_value().strip())
            if problem is not None:
                raise ValueError(f"{ENV_PREFIX}SESSION_SECRET is unsafe: it {problem}; {_KEY_HINT}")
        return self

    def keys(self) -> tuple[bytes, ...]:
        """Every accepted API key, as UTF-8 bytes for constant-time comparison."""
        keys = ([self.api_key] if self.api_key is not None else []) + list(self.api_keys)
        return tuple(k.get_secret_value().strip().encode() for k in keys)
