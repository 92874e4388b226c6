"""Every Redis client facestream creates, and how it connects: password, ACL user and TLS.

:class:`RedisSettings` (part of :class:`~facestream.runtime.settings.PipelineSettings`) reads
``FACESTREAM_REDIS_*``; :func:`redis_client` is the one place a client is made (the sink, the
matchers' presence, the API's dashboard reader, erasure, benchmarks).

* ``FACESTREAM_REDIS_URL``: ``redis://host:6379/0``, or ``rediss://`` for TLS. It may carry a
  user and password (``rediss://facestream:PASSWORD@host:6380/0``): then the whole URL is a
  secret and must come from one (docs/deploy.md, "Transport security").
* ``FACESTREAM_REDIS_USERNAME`` (an ACL user), ``FACESTREAM_REDIS_PASSWORD`` or
  ``FACESTREAM_REDIS_PASSWORD_FILE``: the credentials kept out of the URL, so the URL can stay
  in a ConfigMap. Credentials in both places are refused (redis-py would silently take the
  URL's).
* ``FACESTREAM_REDIS_SSL_CAFILE`` (else the system's CAs), ``..._SSL_CERTFILE`` and
  ``..._SSL_KEYFILE`` (mTLS), ``..._SSL_CHECK_HOSTNAME`` (true): with ``rediss://`` only.
* ``FACESTREAM_REDIS_CLUSTER=true``: the URL is one node of a Redis Cluster; clients discover
  the others and follow the slots (every multi-key command facestream sends stays in one slot:
  the keys share a hash tag, see :mod:`facestream.services.sink.store`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self, cast
from urllib.parse import urlsplit

from pydantic import FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from facestream.runtime.credentials import Unlogged, pick_secret

if TYPE_CHECKING:  # redis-py is imported when a client is made: the core commands need none
    import redis


class RedisSettings(BaseSettings):
    """Where Redis is and how every client reaches it (``FACESTREAM_REDIS_*``)."""

    model_config = SettingsConfigDict(env_prefix="FACESTREAM_", extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_username: str | None = None
    """An ACL user; None: ``default`` (or the URL's)."""
    redis_password: SecretStr | None = None
    redis_password_file: FilePath | None = None
    """A file holding the password (a mounted Secret); instead of FACESTREAM_REDIS_PASSWORD."""
    redis_ssl_cafile: FilePath | None = None
    """CA bundle (PEM) to verify the server with (``rediss://`` only); None: the system's."""
    redis_ssl_certfile: FilePath | None = None
    redis_ssl_keyfile: FilePath | None = None
    redis_ssl_check_hostname: bool = True
    redis_cluster: bool = False
    """The URL is a node of a Redis Cluster (the same ``redis://`` URL ``redis-cli -c`` takes):
    clients are :class:`~redis.cluster.RedisCluster`."""

    @model_validator(mode="after")
    def _redis_consistent(self) -> Self:
        parts = urlsplit(self.redis_url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                "FACESTREAM_REDIS_URL must start with redis://, rediss:// (TLS) or unix://"
            )
        separate = self.redis_password is not None or self.redis_password_file is not None
        if (parts.password or parts.username) and (separate or self.redis_username):
            raise ValueError(
                "FACESTREAM_REDIS_URL carries credentials and FACESTREAM_REDIS_USERNAME/"
                "PASSWORD are set too: use one place"
            )
        tls = {
            "FACESTREAM_REDIS_SSL_CAFILE": self.redis_ssl_cafile,
            "FACESTREAM_REDIS_SSL_CERTFILE": self.redis_ssl_certfile,
            "FACESTREAM_REDIS_SSL_KEYFILE": self.redis_ssl_keyfile,
        }
        given = [name for name, value in tls.items() if value is not None]
        if given and parts.scheme != "rediss":
            raise ValueError(f"{', '.join(given)} given but FACESTREAM_REDIS_URL is not rediss://")
        if self.redis_ssl_keyfile is not None and self.redis_ssl_certfile is None:
            raise ValueError("FACESTREAM_REDIS_SSL_KEYFILE needs FACESTREAM_REDIS_SSL_CERTFILE")
        self.password()  # both given, or an unreadable file: refused here
        return self

    def password(self) -> Unlogged | None:
        """The password given apart from the URL, read now (from the file if one is given)."""
        return pick_secret(
            self.redis_password, self.redis_password_file, "FACESTREAM_REDIS_PASSWORD"
        )


def stack_redis(url: str) -> RedisSettings:
    """``url`` with no password or TLS, whatever the environment says: for the local stack
    (:mod:`facestream.devstack`), which never runs anything else."""
    return RedisSettings.model_construct(redis_url=url)


def redis_options(settings: RedisSettings) -> dict[str, Any]:
    """redis-py's keyword arguments (besides the URL) for ``settings``."""
    options: dict[str, Any] = {}
    if settings.redis_username:
        options["username"] = settings.redis_username
    password = settings.password()
    if password is not None:
        options["password"] = password
    if urlsplit(settings.redis_url).scheme == "rediss":
        options["ssl_check_hostname"] = settings.redis_ssl_check_hostname
        for option, path in (
            ("ssl_ca_certs", settings.redis_ssl_cafile),
            ("ssl_certfile", settings.redis_ssl_certfile),
            ("ssl_keyfile", settings.redis_ssl_keyfile),
        ):
            if path is not None:
                options[option] = str(path)
    return options


def redis_client(settings: RedisSettings, **options: Any) -> redis.Redis:
    """A client of the pipeline's Redis with ``options`` (``decode_responses``, timeouts).
    Connection options cannot be overridden: passing one is a TypeError."""
    import redis
    from redis.cluster import RedisCluster

    if settings.redis_cluster:
        # RedisCluster answers the commands, pipelines and scripts facestream sends as
        # redis.Redis does (each touches one slot), so callers keep one type. The one
        # difference, scripts queued in a cluster pipeline, is handled by the sink's Applier.
        cluster = RedisCluster.from_url(settings.redis_url, **redis_options(settings), **options)
        return cast(redis.Redis, cluster)
    return redis.Redis.from_url(settings.redis_url, **redis_options(settings), **options)
