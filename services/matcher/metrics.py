"""Prometheus metrics of the matcher (bounded labels: never a face id, member id or store)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter(
    "facestream_matcher_decisions_total",
    "Faces decided, by kind (member, returning, new; replayed = a 'new' re-emitted on replay).",
    ["kind"],
)
IDENTITIES = Gauge(
    "facestream_matcher_identities",
    "Identities held in memory, by tier (member; visitor = all store shards and replicas).",
    ["tier"],
)
SHARDS = Gauge("facestream_matcher_shards", "Store shards held in memory (owned and replicas).")
REBUILD = Histogram(
    "facestream_matcher_rebuild_seconds",
    "Time to read a changelog into memory (at start for members, on assignment for visitors).",
    ["tier"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
ERASURES = Counter(
    "facestream_matcher_erasures_total", "Tombstones applied to a gallery, by tier.", ["tier"]
)
SKIPPED = Counter(
    "facestream_matcher_changelog_skipped_total",
    "Changelog records that could not be applied, by tier and reason.",
    ["tier", "reason"],
)
REDIS_ERRORS = Counter(
    "facestream_matcher_redis_errors_total", "Failed heartbeats or erasure acknowledgements."
)
PARTITIONER_MISMATCH = Counter(
    "facestream_matcher_partitioner_mismatch_total",
    "Observations in another partition than murmur2(store) says: neighbour replicas of such "
    "stores are looked up in the wrong partition (a producer with another partitioner).",
)
