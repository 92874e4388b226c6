"""The sink stage: match events in, visit statistics in Redis out (no Kafka outputs).

``handle`` only decodes and plans (pure, so a bad event is dead-lettered by the runner and
nothing else can fail there); the whole batch is applied in ``before_commit`` in one pipelined
round trip. If Redis is down, ``before_commit`` raises, the runner commits nothing and handles
the batch again: events are retried, never dead-lettered for an outage. Applying is idempotent
(each store's applied offset per partition, and its recent event ids, are kept with its visits),
so the part of a batch that did reach Redis is a no-op the second time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka.structs import TopicPartition
from prometheus_client import Counter

from facestream.runtime import metrics
from facestream.runtime.logs import add_log_context
from facestream.runtime.runner import Handler, KafkaRecord, Output, Poison, where
from facestream.schemas import MatchEvent, decode
from facestream.services.sink.settings import SinkSettings
from facestream.services.sink.store import Applier, Plan, Position, plan

log = logging.getLogger(__name__)

EVENTS = Counter(
    "facestream_sink_events_total",
    "Match events by what applying them did (applied, duplicate, suppressed, redelivered).",
    ["outcome"],
)
VISITS_STARTED = Counter("facestream_sink_visits_started_total", "Visits started (PV).")

_OUTCOMES = {1: "applied", 0: "duplicate", -1: "suppressed", -2: "redelivered"}


@dataclass(frozen=True)
class _Pending:
    plan: Plan
    captured_at: datetime
    where: str
    """``topic[partition]@offset``, for log lines (applied after the record's log context)."""
    camera: str


class SinkHandler(Handler):
    """Applies ``matches.v1`` records to Redis through :class:`~.store.Applier`."""

    stage = "sink"

    def __init__(self, applier: Applier, sink: SinkSettings) -> None:
        self.applier = applier
        self.sink = sink
        self._pending: list[_Pending] = []

    def handle(self, record: KafkaRecord) -> Sequence[Output]:
        event = decode(MatchEvent, record.value)
        add_log_context(store=event.store_id, camera=event.camera_id)
        try:
            at = Position(record.topic, record.partition, record.offset)
            planned = plan(event, self.sink, self.applier.prefix, at)
        except ValueError as exc:
            raise Poison("invalid", str(exc)) from exc
        self._pending.append(_Pending(planned, event.captured_at, where(record), event.camera_id))
        return []

    def before_commit(self) -> None:
        # Taken out first: if applying fails, the runner re-handles the batch from its start
        # and fills the list again.
        pending, self._pending = self._pending, []
        outcomes = self.applier.apply([p.plan for p in pending])
        now = datetime.now(UTC)
        for item, outcome in zip(pending, outcomes, strict=True):
            EVENTS.labels(_OUTCOMES.get(outcome.status, "unknown")).inc()
            if outcome.visit_started:
                VISITS_STARTED.inc()
            if outcome.applied:
                delay = (now - item.captured_at).total_seconds()
                metrics.EVENT_DELAY.labels(self.stage).observe(max(0.0, delay))
            elif outcome.status == -1:
                log.info(
                    "dropped event %s of an erased person (store %s, camera %s, %s)",
                    item.plan.event_id,
                    item.plan.store,
                    item.camera,
                    item.where,
                )
        if pending:
            log.debug(
                "applied a batch of %d (%d new visits, last %s)",
                len(pending),
                sum(o.visit_started for o in outcomes),
                pending[-1].where,
            )

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        # The runner commits before a rebalance completes; anything left is already replayable.
        self._pending.clear()
