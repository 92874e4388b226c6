"""Every Kafka client facestream creates, and how it connects: TLS and SASL in one place.

:class:`KafkaSettings` holds where the brokers are and how to reach them, from
``FACESTREAM_KAFKA_*`` variables (:class:`~facestream.runtime.settings.PipelineSettings` is
one, so every process reads them). :func:`kafka_options` turns them into kafka-python's keyword
arguments, and :func:`consumer`, :func:`producer` and :func:`admin` are the only places a client
is constructed: a client made anywhere else would connect in plaintext whatever the settings
say (``tests/runtime/test_transport_security.py`` checks that none is).

The default is PLAINTEXT, what the local stack and docker-compose run on 127.0.0.1 or a private
network. On a real cluster (docs/deploy.md, "Transport security"):

* ``FACESTREAM_KAFKA_SECURITY_PROTOCOL``: ``SSL`` (TLS, optionally with a client certificate:
  mTLS) or ``SASL_SSL`` (TLS plus a user and password); ``SASL_PLAINTEXT`` exists for brokers
  on a trusted network only (SCRAM does not send the password, PLAIN does, in clear);
* ``FACESTREAM_KAFKA_SSL_CAFILE``: the CA bundle (PEM) that signed the brokers' certificates
  (else the system's); the broker's name is checked against its certificate unless
  ``FACESTREAM_KAFKA_SSL_CHECK_HOSTNAME=false``;
* ``FACESTREAM_KAFKA_SSL_CERTFILE`` and ``..._KEYFILE`` (PEM; ``..._KEY_PASSWORD[_FILE]`` if the
  key is encrypted): the client certificate for mTLS;
* ``FACESTREAM_KAFKA_SASL_MECHANISM`` (``SCRAM-SHA-512`` by default, ``SCRAM-SHA-256``,
  ``PLAIN``), ``..._SASL_USERNAME``, and ``..._SASL_PASSWORD`` or ``..._SASL_PASSWORD_FILE``
  (a mounted Secret).

Inconsistent settings (a password without SASL, a CA file without TLS, SASL without a user) are
refused when the settings are built, so a worker stops at start-up (exit code 2) rather than
connecting in a way nobody asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal, Self

from pydantic import FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from facestream.runtime.credentials import Unlogged, pick_secret

if TYPE_CHECKING:  # kafka-python is imported when a client is made: the core commands need none
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]

TLS_PROTOCOLS: Final = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS: Final = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


class KafkaSettings(BaseSettings):
    """Where the brokers are and how every client reaches them (``FACESTREAM_KAFKA_*``)."""

    model_config = SettingsConfigDict(env_prefix="FACESTREAM_", extra="ignore", frozen=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_ssl_cafile: FilePath | None = None
    """CA bundle (PEM) to verify the brokers with; None: the system's CAs."""
    kafka_ssl_check_hostname: bool = True
    """Check the broker's certificate names the host connected to (turn off only for tests)."""
    kafka_ssl_certfile: FilePath | None = None
    """Client certificate (PEM) for mTLS; it may hold the key too."""
    kafka_ssl_keyfile: FilePath | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_key_password_file: FilePath | None = None
    kafka_sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: FilePath | None = None
    """A file holding the password (a mounted Secret); instead of FACESTREAM_KAFKA_SASL_PASSWORD."""

    @model_validator(mode="after")
    def _kafka_consistent(self) -> Self:
        protocol = self.kafka_security_protocol
        sasl = {
            "FACESTREAM_KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "FACESTREAM_KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
            "FACESTREAM_KAFKA_SASL_PASSWORD_FILE": self.kafka_sasl_password_file,
        }
        tls = {
            "FACESTREAM_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "FACESTREAM_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "FACESTREAM_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
            "FACESTREAM_KAFKA_SSL_KEY_PASSWORD": self.kafka_ssl_key_password,
            "FACESTREAM_KAFKA_SSL_KEY_PASSWORD_FILE": self.kafka_ssl_key_password_file,
        }
        if protocol in SASL_PROTOCOLS:
            if not self.kafka_sasl_username:
                raise ValueError(f"{protocol} needs FACESTREAM_KAFKA_SASL_USERNAME")
            if self.sasl_password() is None:
                raise ValueError(
                    f"{protocol} needs FACESTREAM_KAFKA_SASL_PASSWORD or "
                    "FACESTREAM_KAFKA_SASL_PASSWORD_FILE"
                )
        else:
            given = [name for name, value in sasl.items() if value is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} given but FACESTREAM_KAFKA_SECURITY_PROTOCOL is "
                    f"{protocol}: use SASL_SSL"
                )
        if protocol not in TLS_PROTOCOLS:
            given = [name for name, value in tls.items() if value is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} given but FACESTREAM_KAFKA_SECURITY_PROTOCOL is "
                    f"{protocol}: use SSL or SASL_SSL"
                )
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError("FACESTREAM_KAFKA_SSL_KEYFILE needs FACESTREAM_KAFKA_SSL_CERTFILE")
        self.ssl_key_password()  # both given, or an unreadable file: refused here
        return self

    def sasl_password(self) -> Unlogged | None:
        """The SASL password, read now (from the file when one is given)."""
        return pick_secret(
            self.kafka_sasl_password,
            self.kafka_sasl_password_file,
            "FACESTREAM_KAFKA_SASL_PASSWORD",
        )

    def ssl_key_password(self) -> Unlogged | None:
        """The password of the client key, if it is encrypted."""
        return pick_secret(
            self.kafka_ssl_key_password,
            self.kafka_ssl_key_password_file,
            "FACESTREAM_KAFKA_SSL_KEY_PASSWORD",
        )


def stack_kafka(bootstrap: str) -> KafkaSettings:
    """PLAINTEXT to ``bootstrap``, whatever the environment says: for the local stack
    (:mod:`facestream.devstack`), which never runs anything else."""
    return KafkaSettings.model_construct(kafka_bootstrap=bootstrap)


def describe(settings: KafkaSettings) -> str:
    """How ``settings`` reach the brokers, for messages: ``host:9093 over SASL_SSL
    (SCRAM-SHA-512 as facestream)``; never the password."""
    protocol = settings.kafka_security_protocol
    text = f"{settings.kafka_bootstrap} over {protocol}"
    if protocol in SASL_PROTOCOLS:
        text += f" ({settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username})"
    elif settings.kafka_ssl_certfile is not None:
        text += " (client certificate)"
    return text


RECONNECT_BACKOFF_MAX_MS = 2000
"""Longest wait between two attempts to reach a broker that went away."""


def kafka_options(settings: KafkaSettings) -> dict[str, Any]:
    """kafka-python's keyword arguments for ``settings``: the brokers, and TLS and SASL as
    configured. The same for consumers, producers and admin clients."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": protocol,
        # kafka-python backs off up to 30 s between reconnections (Java clients: 1 s): after a
        # broker restart workers sat idle that long (tests/reliability/test_faults.py).
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }
    if protocol in TLS_PROTOCOLS:
        options["ssl_check_hostname"] = settings.kafka_ssl_check_hostname
        for option, path in (
            ("ssl_cafile", settings.kafka_ssl_cafile),
            ("ssl_certfile", settings.kafka_ssl_certfile),
            ("ssl_keyfile", settings.kafka_ssl_keyfile),
        ):
            if path is not None:
                options[option] = str(path)
        key_password = settings.ssl_key_password()
        if key_password is not None:
            options["ssl_password"] = key_password
    if protocol in SASL_PROTOCOLS:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.sasl_password()
    return options


def consumer(settings: KafkaSettings, *topics: str, **options: Any) -> KafkaConsumer:
    """A ``KafkaConsumer`` of ``topics`` (none: assign or subscribe later) with ``options``
    (group, offsets, ...). Connection options cannot be overridden: passing one is a
    TypeError."""
    from kafka import KafkaConsumer

    return KafkaConsumer(*topics, **kafka_options(settings), **options)


def producer(settings: KafkaSettings, **options: Any) -> KafkaProducer:
    """A ``KafkaProducer`` with ``options``; see also
    :func:`facestream.runtime.runner.make_producer`, the durable one every stage uses."""
    from kafka import KafkaProducer

    return KafkaProducer(**kafka_options(settings), **options)


def admin(settings: KafkaSettings, **options: Any) -> KafkaAdminClient:
    """A ``KafkaAdminClient`` with ``options`` (client id, timeouts)."""
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(**kafka_options(settings), **options)
