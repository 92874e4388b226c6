"""The entry point every Kafka worker shares: settings, logging, metrics, signals, run, close.

A service declares a :class:`Worker`: its stage, its settings class, and a function that builds
its handler (opening what it needs) and says what it reads. :func:`run_worker` does the rest,
the same way for every service:

1. refuse an unknown ``FACESTREAM_*`` variable (:mod:`.environment`), build
   :class:`PipelineSettings` and the service's settings; invalid ones stop the process with
   one message naming the variables, exit code 2;
2. configure logging once; serve /metrics, /healthz and /readyz (:mod:`.health`: failing
   until the loop runs, so the start-up probe covers loading models and reading members);
3. build the handler, then the :class:`Runner`: Kafka or Redis out of reach stops the process
   with one message (exit code 1), not a traceback;
4. install the SIGTERM/SIGINT stop flag and run until stopped (or idle, for tests and replays);
   a :class:`Fatal` error, or one the service lists in ``stop_on``, stops it with one message
   (exit code 1) for the orchestrator to restart it;
5. close whatever the service opened, however the run ended.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

import click
from kafka.errors import KafkaError
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from pydantic_settings import SettingsError as EnvParseError
from redis.exceptions import RedisError

from facestream.runtime.environment import UnknownVariable, check_environment
from facestream.runtime.health import Health, serve_health
from facestream.runtime.kafka_clients import describe as describe_kafka
from facestream.runtime.logs import configure_logging, redact_url
from facestream.runtime.runner import Backoff, Fatal, Handler, Runner
from facestream.runtime.settings import PipelineSettings
from facestream.schemas.times import TimeBounds

log = logging.getLogger(__name__)

S = TypeVar("S", bound=BaseSettings)


class InvalidSettings(click.ClickException):
    """Settings (environment variables or options) the process cannot start with."""

    exit_code = 2


@dataclass(frozen=True)
class Subscription:
    """A built handler and what it reads: what a service's ``subscribe`` returns."""

    handler: Handler
    topic: str
    max_batch: int
    consumer_options: Mapping[str, Any] | None = None
    """Extra ``KafkaConsumer`` options (e.g. the sink's ``group_instance_id``)."""
    time_order: bool = False
    """Hand the records of the worker's partitions over in timestamp order
    (:mod:`facestream.runtime.timeorder`; the detector's frames)."""
    note: str = ""
    """The rest of the start-up log line (outputs, tuning worth seeing in the log)."""


@dataclass(frozen=True)
class Worker(Generic[S]):
    """What a service declares to run as a Kafka worker; the group is ``{prefix}-{stage}``."""

    stage: str
    settings: type[S]
    subscribe: Callable[[PipelineSettings, S, ExitStack], Subscription]
    """Builds the handler; registers on the stack whatever must be closed after the run."""
    stop_on: tuple[type[Exception], ...] = field(default=())
    """Errors besides :class:`Fatal` that mean "restart me" (e.g. state that cannot be read)."""


def load_settings(cls: type[S]) -> S:
    """``cls()`` from the environment, or :class:`InvalidSettings` naming every bad variable
    (an unknown ``FACESTREAM_*`` variable included: a typo must not pass for a default)."""
    try:
        check_environment(os.environ, [cls])
    except UnknownVariable as exc:
        raise InvalidSettings(f"invalid settings: {exc}") from None
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = [
            f"{prefix}{str(error['loc'][0]).upper() if error['loc'] else ''}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise InvalidSettings("invalid settings: " + "; ".join(problems)) from None
    except EnvParseError as exc:  # a JSON-valued variable that is not JSON
        raise InvalidSettings(f"invalid settings: {exc}") from None


@contextmanager
def reaching(pipeline: PipelineSettings) -> Iterator[None]:
    """Turns a Kafka or Redis error raised within into one message (exit code 1)."""
    try:
        yield
    except KafkaError as exc:
        # kafka-python reports a refused password or certificate as a dropped connection
        # (then "Unable to bootstrap"); the broker's log says which it was.
        hint = ""
        if pipeline.kafka_security_protocol != "PLAINTEXT":
            hint = (
                "; if the brokers are up, check FACESTREAM_KAFKA_SSL_CAFILE and the credentials "
                "(the broker logs a failed authentication)"
            )
        raise click.ClickException(
            f"cannot reach Kafka at {describe_kafka(pipeline)}: {exc}{hint}"
        ) from exc
    except RedisError as exc:
        raise click.ClickException(
            f"cannot reach Redis at {redact_url(pipeline.redis_url)}: {exc}"
        ) from exc


def run_worker(
    worker: Worker[S], *, max_idle_seconds: float | None = None, log_level: str | None = None
) -> None:
    """Run ``worker`` until SIGTERM/SIGINT (or ``max_idle_seconds`` without input).

    Errors that stop it are :class:`click.ClickException` (a message, then exit 1, or 2 for
    settings): call it from a click command."""
    pipeline = load_settings(PipelineSettings)
    settings = load_settings(worker.settings)
    level = log_level or pipeline.log_level
    try:
        configure_logging(level)
    except ValueError:
        raise InvalidSettings(f"invalid settings: unknown log level {level!r}") from None
    health = Health(pipeline.liveness_seconds)
    try:
        serve_health(pipeline.metrics_port, health)
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve /metrics on port {pipeline.metrics_port}: {exc.strerror or exc}"
        ) from exc
    group = pipeline.group(worker.stage)
    stop_on: tuple[type[Exception], ...] = (Fatal, *worker.stop_on)
    with ExitStack() as resources:
        try:
            with reaching(pipeline):
                sub = worker.subscribe(pipeline, settings, resources)
                runner = Runner(
                    sub.handler,
                    kafka=pipeline,
                    topic=sub.topic,
                    group=group,
                    max_batch=sub.max_batch,
                    consumer_options=dict(sub.consumer_options or {}),
                    time_order=sub.time_order,
                    health=health,
                    keep_dead_letter_payload=pipeline.dlq_keep_payload,
                    backoff=Backoff(pipeline.retry_first_seconds, pipeline.retry_max_seconds),
                    time_bounds=TimeBounds(max_ahead=timedelta(seconds=pipeline.max_ahead_seconds)),
                )
            runner.install_signal_handlers()
            log.info(
                "%s: %s, group %s, batch %d%s",
                worker.stage,
                sub.topic,
                group,
                sub.max_batch,
                f"; {sub.note}" if sub.note else "",
            )
            runner.run(max_idle_seconds=max_idle_seconds)
        except stop_on as exc:
            raise click.ClickException(f"{worker.stage} stopped: {exc}") from exc
