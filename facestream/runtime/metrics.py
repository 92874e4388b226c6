"""Prometheus metrics every worker exports (one /metrics per process; bounded label sets).

Served with /healthz and /readyz by :func:`facestream.runtime.health.serve_health`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "facestream_messages_total", "Input messages handled, by outcome.", ["stage", "outcome"]
)
OUTPUTS = Counter(
    "facestream_outputs_total", "Messages produced, by topic kind.", ["stage", "kind"]
)
DEAD_LETTERED = Counter(
    "facestream_dead_lettered_total", "Messages sent to a dead-letter topic.", ["stage", "reason"]
)
ERRORS = Counter("facestream_errors_total", "Unexpected handler errors.", ["stage"])
RETRIES = Counter(
    "facestream_retries_total",
    "Retries: a record after a transient error (with backoff), or a batch after a failed produce.",
    ["stage"],
)
ORDER_GAVE_UP = Counter(
    "facestream_time_order_gave_up_total",
    "Partitions whose records were not fetched within the time order's wait: records of the "
    "others went ahead of theirs (the detector's frames, facestream.runtime.timeorder).",
    ["stage"],
)
IN_PROGRESS = Gauge("facestream_in_progress", "Messages being handled now.", ["stage"])
PROCESSING = Histogram(
    "facestream_processing_seconds",
    "Time to handle one input message.",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LAG = Gauge("facestream_consumer_lag", "Messages behind the end of the input topic.", ["stage"])
EVENT_DELAY = Histogram(
    "facestream_event_delay_seconds",
    "Wall-clock time from captured_at to the end of handling (end-to-end latency so far).",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)
