"""The sink worker's entry: ``facestream sink``, ``python -m facestream.services.sink``."""

from __future__ import annotations

import logging

import click
from pydantic import ValidationError

from facestream.runtime import metrics
from facestream.runtime.logs import configure_logging
from facestream.runtime.runner import Runner
from facestream.runtime.settings import PipelineSettings
from facestream.services.sink.settings import SinkSettings
from facestream.services.sink.store import Applier, redis_client
from facestream.services.sink.worker import SinkHandler

log = logging.getLogger(__name__)


@click.command("sink")
@click.option(
    "--max-idle-seconds",
    type=float,
    default=None,
    help="Stop once matches.v1 has been idle this long (replays, tests) [default: never].",
)
def sink_command(max_idle_seconds: float | None) -> None:
    """Record visits, PV/UV, new/returning and dwell in Redis from matches.v1.

    Configured by FACESTREAM_* (Kafka, Redis, prefixes) and FACESTREAM_SINK_* (visit gap, time
    zones, retention).
    """
    try:
        settings = PipelineSettings()
        sink = SinkSettings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid settings\n{exc}") from None
    configure_logging(settings.log_level)
    metrics.serve_metrics(settings.metrics_port)
    client = redis_client(settings)
    client.ping()  # fail at start, not at the first batch, when Redis is unreachable
    handler = SinkHandler(Applier(client, settings.redis_prefix), sink)
    static = {"group_instance_id": sink.group_instance_id} if sink.group_instance_id else None
    runner = Runner(
        handler,
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topics.matches,
        group=settings.group("sink"),
        max_batch=sink.max_batch,
        consumer_options=static,
    )
    runner.install_signal_handlers()
    log.info(
        "sink: %s -> redis prefix %r, group %s, visit gap %ds, default zone %s",
        settings.topics.matches,
        settings.redis_prefix,
        settings.group("sink"),
        sink.visit_gap_seconds,
        sink.timezone,
    )
    try:
        runner.run(max_idle_seconds=max_idle_seconds)
    finally:
        client.close()
