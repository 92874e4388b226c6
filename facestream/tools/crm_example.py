"""An example CRM consumer of ``matches.v1``: it greets members as they walk into a store.

    $ facestream crm-example --from-beginning
    member 1234 just entered store 7 at 14:05 (camera c1)

It shows what any downstream consumer of the match events needs to get right:

- its own consumer group, so it reads every match independently of the sink (and of other
  CRMs), and commits its own position;
- at-least-once delivery: after a crash or a rebalance a match can arrive twice, so it remembers
  the event ids it has handled (in memory here; a real CRM would keep them next to its own data)
  and acts once per event id;
- event time: the time shown is when the camera saw the member, in the store's time zone, not
  when the message happened to be read;
- one member passes several cameras on the way in: it greets a member once per visit, i.e. not
  again until they have been unseen for the sink's visit gap.

Configured like the pipeline: ``FACESTREAM_*`` (Kafka, topic prefix) and ``FACESTREAM_SINK_*``
(store time zones, visit gap).
"""

from __future__ import annotations

import logging
import signal
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

import click
from kafka import ConsumerRebalanceListener, KafkaConsumer
from pydantic import ValidationError

from facestream.runtime import kafka_clients
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import MatchEvent, SchemaError, decode
from facestream.services.sink.settings import SinkSettings

log = logging.getLogger(__name__)

# How many event ids to remember. Duplicates come from redelivery of a batch, which is close in
# the stream, so a bounded window is enough and memory stays flat.
SEEN_LIMIT = 100_000


def greeting(event: MatchEvent, zone: ZoneInfo) -> str:
    """The line printed for a member match."""
    local = event.captured_at.astimezone(zone)
    return (
        f"member {event.member_id} just entered store {event.store_id} at {local:%H:%M} "
        f"(camera {event.camera_id})"
    )


class Greeter:
    """Decides which matches deserve a greeting: members, once per event id and per visit."""

    def __init__(self, sink: SinkSettings) -> None:
        self.sink = sink
        self.gap = timedelta(seconds=sink.visit_gap_seconds)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._last: dict[tuple[str, str], datetime] = {}

    def offer(self, event: MatchEvent) -> str | None:
        """The greeting for ``event``, or None (a repeat, not a member, or the same visit)."""
        if event.event_id in self._seen:
            return None  # redelivered: handled already
        self._seen[event.event_id] = None
        if len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        if event.kind != "member" or event.member_id is None:
            return None
        who = (event.store_id, event.member_id)
        last = self._last.get(who)
        # Compare event times: the member's previous sighting, not our reading clock.
        self._last[who] = max(last, event.captured_at) if last else event.captured_at
        if last is not None and abs(event.captured_at - last) <= self.gap:
            return None  # still the same visit (another camera, or a later frame)
        return greeting(event, self.sink.zone_for(event.store_id))


class _FromBeginning(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, rewind to the first retained match (ignoring the group's position)."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self.consumer = consumer

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            self.consumer.seek_to_beginning(*assigned)


def run(
    settings: PipelineSettings,
    sink: SinkSettings,
    *,
    from_beginning: bool = False,
    max_idle_seconds: float | None = None,
    emit: Callable[[str], None] = click.echo,
) -> int:
    """Consume matches until stopped (or idle that long); returns the number of greetings."""
    consumer = kafka_clients.consumer(
        settings,
        group_id=settings.group("crm-example"),
        # Commit ourselves, after acting: a crash then repeats a greeting at worst, never loses one.
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    listener = _FromBeginning(consumer) if from_beginning else ConsumerRebalanceListener()
    consumer.subscribe([settings.topics.matches], listener=listener)
    greeter = Greeter(sink)
    stop = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True  # finish the batch in hand, commit, leave the group

    signal.signal(signal.SIGTERM, on_signal)
    greeted = 0
    idle_since = time.monotonic()
    try:
        while not stop:
            batch = consumer.poll(timeout_ms=500)
            if not batch:
                if max_idle_seconds and time.monotonic() - idle_since > max_idle_seconds:
                    break
                continue
            idle_since = time.monotonic()
            for records in batch.values():
                for record in records:
                    try:
                        event = decode(MatchEvent, record.value)
                    except SchemaError as exc:
                        # Not ours to dead-letter (the sink does); note it and move on.
                        log.warning("skipping %s@%d: %s", record.topic, record.offset, exc)
                        continue
                    line = greeter.offer(event)
                    if line is not None:
                        emit(line)
                        greeted += 1
            consumer.commit()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close(autocommit=False)
    return greeted


@click.command("crm-example")
@click.option("--from-beginning", is_flag=True, help="Replay every retained match first.")
@click.option(
    "--max-idle-seconds",
    type=float,
    default=None,
    help="Stop once no match has arrived for this long [default: run until Ctrl+C].",
)
def crm_example_command(from_beginning: bool, max_idle_seconds: float | None) -> None:
    """Example CRM: print a line whenever a member enters a store."""
    try:
        settings = PipelineSettings()
        sink = SinkSettings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid settings\n{exc}") from None
    run(settings, sink, from_beginning=from_beginning, max_idle_seconds=max_idle_seconds)
