"""The one Kafka loop every worker runs: poll, handle, produce, flush, then commit.

A worker is a :class:`Handler` (pure logic: a record in, outputs out) plus this runner. The
contract, after quix-streams' checkpointing:

1. poll a batch (a runner made with ``time_order``, the detector's, takes it from buffers per
   partition, lowest Kafka timestamp first across them: :mod:`facestream.runtime.timeorder`);
2. ``handle`` each record; a record that can never be handled (a :class:`Poison` error: a
   schema error, a bad image, anything the handler itself calls bad input) becomes a
   dead-letter record with its reason and source offset, and the batch goes on. Any other
   exception may pass (Redis or the broker away, a timeout): the record is tried again after
   a capped exponential backoff, for as long as it takes, never dead-lettered. Meanwhile the
   loop keeps beating (liveness): the process is healthy, the dependency is not, and a
   restart would not help. A poison record mistaken for a transient fault stalls its
   partition, visibly (errors and retries counted, lag growing), rather than being lost;
3. send every output, flush the producer and check every send succeeded;
4. let the handler flush its own side effects (``before_commit``);
5. only then commit offset + 1 of the last record handled in each partition, or, when the
   handler still holds records of a partition back (:meth:`Handler.held`: the matcher waiting
   to decide a store's faces in capture order), the offset of the first one it holds: a crash
   then reads them again;
6. send what the handler owes once its input is committed (:meth:`Handler.after_commit`: the
   detector's camera progress).

A handler that holds records back releases them with a later record, or by itself
(:meth:`Handler.due`, asked once per poll, batch or not): such outputs go through steps 3-5 as
a batch of their own.

If step 3 or 4 fails, nothing is committed: the handler goes back to its state as of the last
commit (:meth:`Handler.rewind`), the consumer seeks back to the batch start and the
batch is handled again after the same capped backoff (outputs are idempotent downstream: ids
are derived, not random). So nothing accepted is lost and a crash anywhere replays at most one
batch.

Event times are checked against the record's Kafka timestamp while it is handled
(:func:`facestream.schemas.times.checking_times`, bounds from ``time_bounds``).

The loop reports to a :class:`~facestream.runtime.health.Health`: a heartbeat per poll and
per record (liveness), and readiness checks: partitions assigned, plus the handler's own
(:meth:`Handler.readiness`).

SIGTERM and SIGINT only set a stop flag: the batch in hand finishes, is flushed and committed,
then the consumer leaves its group. A second SIGINT stops at once.

Each record is handled inside its log context (:mod:`facestream.runtime.logs`): every line
logged meanwhile ends with ``[topic[partition]@offset ...]``. Processes start through
:mod:`facestream.runtime.entry`.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol

from kafka import ConsumerRebalanceListener, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata, TopicPartition

from facestream.runtime import kafka_clients, metrics
from facestream.runtime.health import Health
from facestream.runtime.kafka_clients import KafkaSettings
from facestream.runtime.logs import log_context
from facestream.runtime.timeorder import TimeOrder
from facestream.runtime.topics import Topics
from facestream.schemas import DeadLetter, SchemaError, payload_field
from facestream.schemas.times import DEFAULT_BOUNDS, TimeBounds, checking_times, reference_time

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Output:
    """One message to produce. ``partition`` None lets the producer hash the key."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None
    kind: str = "out"
    """A short label for metrics (``observation``, ``match``, ``identity``, ...)."""


class KafkaRecord(Protocol):
    """What a handler reads of a consumed record. kafka-python's ``ConsumerRecord`` (what the
    runner passes) and :class:`Record` (what tests build) both are one."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> list[tuple[str, bytes]] | None: ...
    @property
    def timestamp(self) -> int: ...


def where(record: KafkaRecord) -> str:
    """``topic[partition]@offset``: how log lines and errors name a record."""
    return f"{record.topic}[{record.partition}]@{record.offset}"


@dataclass(frozen=True)
class Record:
    """The fields of a kafka-python ``ConsumerRecord`` that handlers read. Tests and benchmarks
    build these to drive a handler without a broker."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    timestamp: int = 0


class Poison(Exception):
    """The record can never be handled (bad content); dead-letter it with ``reason``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts after a transient failure: ``first`` seconds, doubled each
    time up to ``cap``. The attempts themselves are not limited."""

    first: float = 0.2
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1 = the first)."""
        return float(min(self.cap, self.first * 2 ** min(failures - 1, 32)))


class _Stopped(Exception):
    """Stop requested while waiting to retry: leave the batch uncommitted."""


class Fatal(Exception):
    """The worker cannot go on (its state is unusable): stop the process, commit nothing more.

    Unlike other exceptions it is not retried or dead-lettered: the record is fine, the worker
    is not. A restart (rebuilding state) is the remedy."""


class Handler:
    """Business logic of one stage. Subclasses implement :meth:`handle`; hooks are optional."""

    stage = "worker"

    def handle(self, record: KafkaRecord) -> Sequence[Output]:
        """Outputs for one record. May see a record again (a batch whose outputs were not
        acknowledged is handled again), so outputs must be derived, never random.

        Runs inside the record's log context: lines logged here carry its place; add the
        store and camera with :func:`~facestream.runtime.logs.add_log_context`."""
        raise NotImplementedError

    def prepare(self, records: Sequence[KafkaRecord]) -> None:
        """The whole poll batch, before its records are handled one by one, in this order:
        for work that is cheaper done once for all of them (the matcher's searches). It must
        not change what :meth:`handle` returns, only how fast; an exception here is logged
        and the batch handled as if it had not been called. Records may be invalid: leave
        them to :meth:`handle`, which dead-letters them."""

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions of the input topic now ours (before any of their records is handled).

        Runs on the consumer's network loop, where it blocks group heartbeats: note the
        partitions here and do slow work (rebuilding state) in :meth:`idle`."""

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions no longer ours (everything handled from them is already committed).
        Same caveat as :meth:`on_assigned`."""

    def drain(self, partitions: Sequence[TopicPartition] | None) -> Sequence[Output]:
        """Outputs owed for records already handled and committed that the handler still
        holds back (the detector's open passes), to publish before ``partitions`` go to
        another worker, or before the worker stops (``None``: every partition). The runner
        sends and flushes them at once, before :meth:`on_revoked`; a send that fails is
        logged, and nothing replays it (its input is committed)."""
        return ()

    def before_commit(self) -> None:
        """Make the batch's own side effects durable; raising prevents the commit."""

    def held(self) -> Mapping[int, int]:
        """Per partition of the input topic, the offset of the first record handled but held
        back (its outputs not produced yet): the runner commits no further. Empty: nothing
        held (the default)."""
        return {}

    def due(self) -> Sequence[Output]:
        """Outputs of held records released by the passing of time (the matcher's wait for a
        camera gone quiet); asked once per poll, whether records came or not."""
        return ()

    def rewind(self) -> None:
        """The outputs since the last commit were not acknowledged: go back to the state of
        the last :meth:`before_commit`; the runner then handles the batch again."""

    def after_commit(self) -> Sequence[Output]:
        """Outputs owed once the batch is committed (the detector's camera progress, which
        may only speak of committed input). Sent without waiting; one that fails is logged,
        and the next commit's outputs supersede it."""
        return ()

    def idle(self) -> None:
        """Called once per poll, records or not (for background reads such as members)."""

    def readiness(self) -> Mapping[str, bool]:
        """This stage's own conditions for being ready, by name (e.g. the matcher's shards
        built). Called from the health server's thread: read flags, do no work. The runner
        adds its own (the loop live, partitions assigned)."""
        return {}


def poison_reason(exc: BaseException) -> tuple[str, str] | None:
    """``(reason, message)`` when ``exc`` means the record itself is bad, else None."""
    if isinstance(exc, Poison | SchemaError):
        return exc.reason, exc.message
    return None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.handler = runner.handler

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))
            self.runner.drain(list(revoked))
            self.runner.forget(list(revoked))
            self.handler.on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))
            self.handler.on_assigned(list(assigned))


class Runner:
    """Runs one :class:`Handler` over one input topic until stopped."""

    def __init__(
        self,
        handler: Handler,
        *,
        kafka: KafkaSettings,
        topic: str,
        group: str,
        max_batch: int = 50,
        backoff: Backoff | None = None,
        time_bounds: TimeBounds = DEFAULT_BOUNDS,
        producer: KafkaProducer | None = None,
        consumer_options: dict[str, Any] | None = None,
        time_order: bool = False,
        health: Health | None = None,
        keep_dead_letter_payload: bool = False,
    ) -> None:
        self.handler = handler
        self.keep_dead_letter_payload = keep_dead_letter_payload
        """Whether dead letters carry the failed value (FACESTREAM_DLQ_KEEP_PAYLOAD). Off by
        default: a value that cannot be decoded may be anything, a face image or an encoding
        included, and it stays readable in its source topic (the dead letter says where) for
        that topic's retention; a copy in the dead letter would outlive it."""
        self.health = health or Health(liveness_seconds=float("inf"))
        self._assigned = False
        """Whether the consumer held partitions after the last poll (read by /readyz)."""
        self.topic = topic
        self.max_batch = max_batch
        self.backoff = backoff or Backoff()
        self.time_bounds = time_bounds
        self._stop = False
        self._signals = 0
        self._batch_failures = 0
        self._handled: dict[TopicPartition, int] = {}
        """Per partition, offset + 1 of the last record handled whose outputs were acknowledged."""
        self._committed: dict[TopicPartition, int] = {}
        """Per partition, the offset this runner last committed."""
        self.producer = producer or make_producer(kafka)
        self.consumer = kafka_clients.consumer(
            kafka,
            group_id=group,
            client_id=f"{group}-{handler.stage}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_batch,
            # A batch of frames can take a while on one core; stay in the group meanwhile.
            max_poll_interval_ms=600_000,
            **(consumer_options or {}),
        )
        self.consumer.subscribe([topic], listener=_Listener(self))
        self._order: TimeOrder[KafkaRecord] | None = (
            TimeOrder(self.consumer, low_water=4 * max_batch) if time_order else None
        )
        """With ``time_order``: the polled records, handed over lowest timestamp first across
        partitions (:mod:`facestream.runtime.timeorder`)."""
        self.health.require("assigned", lambda: self._assigned)
        self.health.require_each("handler", handler.readiness)

    # -- lifecycle ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl+C: stop now
        log.info("signal %d: finishing the current batch, then stopping", signum)
        self._stop = True

    def stop(self) -> None:
        self._stop = True

    def run(self, max_idle_seconds: float | None = None) -> None:
        """Poll and handle until stopped (or, for tests and replays, until the input has been
        idle for ``max_idle_seconds``)."""
        idle_since = time.monotonic()
        try:
            while not self._stop:
                records = self._poll()
                self._assigned = bool(self.consumer.assignment())
                self.health.beat()
                self.handler.idle()
                self.health.beat()  # idle() may have built state (the matcher's shards)
                if not records:
                    try:
                        released = self._process([])
                    except _Stopped:
                        log.info("stopping while released outputs wait for a retry")
                        break
                    buffered = self._order is not None and self._order.pending() > 0
                    if (
                        released
                        or buffered
                        or self.handler.held()
                        or not self.consumer.assignment()
                    ):
                        # Work done, work held back or buffered, or still joining the group
                        # (or waiting out a killed predecessor's session): not idleness.
                        idle_since = time.monotonic()
                    elif max_idle_seconds and time.monotonic() - idle_since > max_idle_seconds:
                        break
                    continue
                idle_since = time.monotonic()
                try:
                    self._process(records)
                except _Stopped:
                    log.info("stopping while a record waits for a retry; its batch is replayed")
                    break
                self._report_lag()
        finally:
            self.close()

    def _poll(self) -> list[KafkaRecord]:
        """The next records to handle: a poll's, or, in time order, the buffered records
        that may go now (a poll only tops the buffers up: skipped while they hold enough, it
        does not wait when some may go, and waits little while a partition's fetch is
        awaited; the consumer's heartbeats do not depend on it)."""
        if self._order is None:
            batch = self.consumer.poll(timeout_ms=500, max_records=self.max_batch)
            return [record for records in batch.values() for record in records]
        order = self._order
        if order.wants_more():
            timeout = 0 if order.ready() else 50 if order.pending() else 500
            order.add(self.consumer.poll(timeout_ms=timeout, max_records=4 * self.max_batch))
        taken = order.take(self.max_batch)
        if order.gave_up:
            metrics.ORDER_GAVE_UP.labels(self.handler.stage).inc(order.gave_up)
            order.gave_up = 0
        return taken

    def drain(self, partitions: Sequence[TopicPartition] | None) -> None:
        """Send and flush what the handler owes for ``partitions`` (None: all) before they go
        (:meth:`Handler.drain`); failures are logged, not raised (a rebalance or a stop must go
        on)."""
        try:
            outputs = self.handler.drain(partitions)
            if not outputs:
                return
            futures = [self._send(out) for out in outputs]
            self.producer.flush(timeout=30)
            for future, out in zip(futures, outputs, strict=True):
                future.get(timeout=30)  # raises if that send failed
                metrics.OUTPUTS.labels(self.handler.stage, out.kind).inc()
            log.info("published %d held-back outputs before giving partitions up", len(outputs))
        except Exception:
            log.exception("held-back outputs could not be published; they are lost")

    def forget(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions no longer ours: what was handled or committed of them is the next
        owner's business."""
        for tp in partitions:
            self._handled.pop(tp, None)
            self._committed.pop(tp, None)
        if self._order is not None:
            self._order.forget(partitions)

    def close(self) -> None:
        try:
            self.drain(None)
            self.producer.flush(timeout=10)
        finally:
            self.producer.close(timeout=10)
            self.consumer.close(autocommit=False)
        log.info("stopped")

    # -- one batch ---------------------------------------------------------------------------

    def _process(self, batch: Sequence[KafkaRecord]) -> bool:
        """Handle a batch of records, in order (none: only what the handler releases by
        itself), produce, commit. Whether anything was handled or produced."""
        stage = self.handler.stage
        first: dict[TopicPartition, int] = {}
        handled: dict[TopicPartition, int] = {}
        futures = []
        if batch:
            try:
                self.handler.prepare(batch)
            except Exception:
                log.exception("preparing the batch failed; handling its records without it")
        for record in batch:
            tp = TopicPartition(record.topic, record.partition)
            first.setdefault(tp, record.offset)
            with log_context(where(record)):
                outputs = self._handle(record)
            for out in outputs:
                futures.append(self._send(out))
                metrics.OUTPUTS.labels(stage, out.kind).inc()
            handled[tp] = record.offset + 1
        for out in self._due():
            futures.append(self._send(out))
            metrics.OUTPUTS.labels(stage, out.kind).inc()
        if not handled and not futures:
            return False
        try:
            self.producer.flush(timeout=30)
            for f in futures:
                f.get(timeout=30)  # raises if that send failed
            self.handler.before_commit()
        except Exception:
            # Nothing of this batch is committed: go back and handle it again, later.
            self.handler.rewind()
            metrics.RETRIES.labels(stage).inc()
            self._batch_failures += 1
            delay = self.backoff.delay(self._batch_failures)
            log.exception(
                "batch outputs not acknowledged (failure %d in a row); retrying the batch in "
                "%.1f s",
                self._batch_failures,
                delay,
            )
            # Buffered records (time order) are read again too, from their first.
            seek = self._order.reset() if self._order is not None else {}
            seek.update(first)
            for tp, offset in seek.items():
                self.consumer.seek(tp, offset)
            self._wait(delay)
            return True
        self._batch_failures = 0
        self._handled.update(handled)
        self._commit()
        return True

    def _due(self) -> Sequence[Output]:
        """What the handler releases by itself; a failure is logged and asked again next poll."""
        try:
            return self.handler.due()
        except Fatal:
            raise
        except Exception:
            log.exception("releasing held records failed; trying again at the next poll")
            return ()

    def _commit(self) -> None:
        """Commit what has been handled and acknowledged, short of what the handler holds."""
        stage = self.handler.stage
        held = self.handler.held()
        commit: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, offset in self._handled.items():
            if tp.topic == self.topic and tp.partition in held:
                offset = min(offset, held[tp.partition])
            if self._committed.get(tp) != offset:
                commit[tp] = OffsetAndMetadata(offset, "", -1)
        if not commit:
            self._after_commit()
            return
        try:
            self.consumer.commit(commit)
            self._committed.update({tp: meta.offset for tp, meta in commit.items()})
            self._after_commit()
        except (CommitFailedError, RebalanceInProgressError):
            # The partitions moved to another member mid-batch. Our outputs are out and
            # idempotent; the new owner replays from the last commit. Carry on.
            metrics.RETRIES.labels(stage).inc()
            log.warning("commit refused during a rebalance; the new owner replays the batch")
        except KafkaError as exc:
            # The broker is away (a restart, a cut): the outputs are out and idempotent, and the
            # next batch's commit, or whoever owns the partitions after a restart, covers these
            # offsets (a replay at worst, decided as before). The worker must not stop for it.
            metrics.RETRIES.labels(stage).inc()
            log.warning("commit failed (%s); the next commit covers the batch", exc)
            self._wait(self.backoff.delay(1))

    def _after_commit(self) -> None:
        try:
            for out in self.handler.after_commit():
                self._send(out).add_errback(
                    lambda exc, kind=out.kind: log.warning("%s not sent: %s", kind, exc)
                )
                metrics.OUTPUTS.labels(self.handler.stage, out.kind).inc()
        except Exception:
            log.exception("outputs owed after the commit were not sent")

    def _send(self, out: Output) -> Any:
        """Send one output (the producer's future)."""
        return self.producer.send(
            out.topic, value=out.value, key=out.key, headers=out.headers, partition=out.partition
        )

    def _handle(self, record: KafkaRecord) -> Sequence[Output]:
        stage = self.handler.stage
        metrics.IN_PROGRESS.labels(stage).inc()
        started = time.perf_counter()
        failures = 0
        try:
            while True:
                try:
                    with checking_times(reference_time(record.timestamp), self.time_bounds):
                        outputs = self.handler.handle(record)
                    metrics.MESSAGES.labels(stage, "ok").inc()
                    return outputs
                except Fatal:
                    raise
                except Exception as exc:
                    bad = poison_reason(exc)
                    if bad is not None:
                        return [self._dead_letter(record, *bad)]
                    # Not the record's fault as far as anyone can tell: wait and try again.
                    failures += 1
                    metrics.ERRORS.labels(stage).inc()
                    metrics.RETRIES.labels(stage).inc()
                    delay = self.backoff.delay(failures)
                    # The record's place is in the log context. The traceback once; then a
                    # line per attempt (the cap keeps it to a few a minute).
                    log.warning(
                        "handler failed (failure %d in a row): %r; retrying in %.1f s",
                        failures,
                        exc,
                        delay,
                        exc_info=failures == 1,
                    )
                    self._wait(delay)
        finally:
            # A long batch is progress; a handler stuck inside handle() is not (no beat until
            # it returns), while a wait before a retry beats (see _wait).
            self.health.beat()
            metrics.IN_PROGRESS.labels(stage).dec()
            metrics.PROCESSING.labels(stage).observe(time.perf_counter() - started)

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds`` before a retry, beating (the loop is alive and means to go on)
        and giving up early when a stop is requested."""
        deadline = time.monotonic() + seconds
        while True:
            self.health.beat()
            if self._stop:
                raise _Stopped
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.5))

    def _dead_letter(self, record: KafkaRecord, reason: str, message: str) -> Output:
        stage = self.handler.stage
        metrics.MESSAGES.labels(stage, "dead_lettered").inc()
        metrics.DEAD_LETTERED.labels(stage, reason).inc()
        log.warning("dead-lettering: %s: %s", reason, message)
        error = message[:2000]
        if self.keep_dead_letter_payload:
            payload, truncated = payload_field(record.value)
        else:
            # Withheld: enough to recognise the value (size, hash), not to rebuild it. The
            # payload is "cut" to nothing, so payload_truncated says the value is not all there.
            raw = record.value or b""
            payload, truncated = "", bool(raw)
            if raw:
                digest = hashlib.sha256(raw).hexdigest()
                error += f" [value withheld: {len(raw)} bytes, sha256 {digest}]"
        headers = {}
        for k, v in record.headers or []:
            headers[k] = v.decode("utf-8", "replace")
        letter = DeadLetter(
            stage=stage,
            reason=reason,
            error=error,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            source_key=record.key.decode("utf-8", "replace") if record.key else None,
            source_headers=headers,
            payload_b64=payload,
            payload_truncated=truncated,
            failed_at=datetime.now(UTC),
        )
        return Output(Topics.dlq(record.topic), letter.to_bytes(), record.key, kind="dead_letter")

    def _report_lag(self) -> None:
        try:
            lag = 0
            for tp in self.consumer.assignment():
                high = self.consumer.highwater(tp)
                if high is not None:
                    lag += max(0, high - self.consumer.position(tp))
            if self._order is not None:
                lag += self._order.pending()
            metrics.LAG.labels(self.handler.stage).set(lag)
        except Exception:  # lag is informative only; never let it stop the loop
            log.debug("could not compute lag", exc_info=True)


def make_producer(kafka: KafkaSettings) -> KafkaProducer:
    """A producer that waits for the broker's acknowledgement and keeps per-partition order
    (every stage's, the camera's, enrollment's, erasure's, replays')."""
    return kafka_clients.producer(
        kafka,
        acks="all",
        linger_ms=5,
        retries=5,
        max_in_flight_requests_per_connection=1,
        max_request_size=8 * 1024 * 1024,
    )
