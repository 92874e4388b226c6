"""The sink worker's entry: ``facestream sink``, ``python -m facestream.services.sink``.

What is the sink's own: a Redis client (checked at start, closed at the end), its handler over
``matches.v1`` and static group membership. The rest is
:func:`~facestream.runtime.entry.run_worker`'s.
"""

from __future__ import annotations

from contextlib import ExitStack

import click

from facestream.runtime.entry import Subscription, Worker, run_worker
from facestream.runtime.settings import PipelineSettings
from facestream.services.sink.settings import SinkSettings
from facestream.services.sink.store import Applier, redis_client
from facestream.services.sink.worker import SinkHandler


def subscribe(pipeline: PipelineSettings, sink: SinkSettings, resources: ExitStack) -> Subscription:
    """The sink's handler over ``matches.v1``, its Redis reachable."""
    client = redis_client(pipeline)
    resources.callback(client.close)
    client.ping()  # fail at start, not at the first batch, when Redis is unreachable
    static = {"group_instance_id": sink.group_instance_id} if sink.group_instance_id else None
    return Subscription(
        SinkHandler(Applier(client, pipeline.redis_prefix), sink),
        topic=pipeline.topics.matches,
        max_batch=sink.max_batch,
        consumer_options=static,
        note=(
            f"-> redis prefix {pipeline.redis_prefix!r}, visit gap {sink.visit_gap_seconds}s, "
            f"default zone {sink.timezone}"
        ),
    )


SINK = Worker("sink", SinkSettings, subscribe)


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
    run_worker(SINK, max_idle_seconds=max_idle_seconds)
