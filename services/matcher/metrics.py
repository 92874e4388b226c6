"""Prometheus metrics of the matcher (bounded labels: never a face id, member id or store)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter(
    "facestream_matcher_decisions_total",
    "Faces decided, by kind (member, returning, new; replayed = a decision re-emitted for an "
    "observation handled before: a retried batch, one read back from matches.v1, or one that "
    "minted or taught a visitor).",
    ["kind"],
)
DECISIONS_READ = Counter(
    "facestream_matcher_decisions_read_total",
    "Match events read back from matches.v1 on taking over a partition, to re-emit them for "
    "observations handled again.",
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
SNAPSHOTS = Counter(
    "facestream_matcher_snapshots_total",
    "identities.v1 partitions taken over, by what became of their snapshot: used, missing, or "
    "refused (corrupt, unreadable, format, mismatch, model_mismatch, stale).",
    ["outcome"],
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

# -- visitors that learn (see .learning) ----------------------------------------------------
SAMPLES_LEARNED = Counter(
    "facestream_matcher_samples_learned_total",
    "Encodings added to a returning visitor's samples (confident, diverse, good quality).",
)
LEARN_SKIPPED = Counter(
    "facestream_matcher_learn_skipped_total",
    "Returning decisions not learned from, by reason (off, neighbour, not_confident, quality, "
    "full, duplicate).",
    ["reason"],
)
VISITOR_SAMPLES = Gauge(
    "facestream_matcher_visitor_samples",
    "Samples held by the visitors in memory (minted and learned; divided by "
    "facestream_matcher_identities{tier='visitor'}: samples per visitor).",
)
RETURNING_SAMPLES = Histogram(
    "facestream_matcher_returning_samples",
    "Samples the visitor held when recognised as returning (after any learning).",
    buckets=(1, 2, 3, 4, 5, 6, 8, 12, 16, 32, 64),
)
BY_LEARNED_SAMPLE = Counter(
    "facestream_matcher_returning_by_learned_sample_total",
    "Returning decisions whose nearest sample of the visitor was a learned one.",
)
RETIRED = Counter(
    "facestream_matcher_visitors_retired_total",
    "Visitors of owned stores retired (dropped and tombstoned) after going unseen for the "
    "retention period (FACESTREAM_MATCHER_VISITOR_RETENTION_DAYS).",
)
LAST_SEEN_WRITTEN = Counter(
    "facestream_matcher_last_seen_written_total",
    "Visitor records re-written only to move last_seen (a sighting a day or more after it).",
)
RETOMBSTONED = Counter(
    "facestream_matcher_retombstoned_total",
    "Tombstones written again for FaceIds whose record landed after their erasure.",
)

# -- reading state before each batch ----------------------------------------------------------
CAUGHT_UP = Counter(
    "facestream_matcher_caught_up_records_total",
    "Changelog records applied while catching up before a batch, by tier: each was missing "
    "when the batch arrived, and would have been missing from its decisions.",
    ["tier"],
)
CATCH_UP_TIMEOUTS = Counter(
    "facestream_matcher_catch_up_timeouts_total",
    "Batches decided before a changelog could be read to its end (catch_up_timeout), by tier.",
    ["tier"],
)

# -- members that learn (see .learning.MemberLearnPolicy) ------------------------------------
MEMBER_SAMPLES_LEARNED = Counter(
    "facestream_matcher_member_samples_learned_total",
    "Encodings added to a member's learned samples (member-samples.v1) by this matcher.",
)
MEMBER_LEARN_SKIPPED = Counter(
    "facestream_matcher_member_learn_skipped_total",
    "Member decisions not learned from, by reason (off, not_confident, quality, full, "
    "duplicate, known).",
    ["reason"],
)
BATCH_FACES = Histogram(
    "facestream_matcher_batch_faces",
    "Faces per poll batch searched together before they are decided one by one.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
MEMBER_SCALES = Gauge(
    "facestream_matcher_member_scales",
    "Members whose normalised-policy scale is computed and kept (facestream.core.scales).",
)
MEMBER_SCALES_FILLED = Histogram(
    "facestream_matcher_member_scales_fill_seconds",
    "Seconds to compute every member's scale on the background thread after the members are "
    "read (FACESTREAM_MATCHER_MEMBER_SCALES=background).",
    buckets=(0.1, 1, 10, 60, 300, 1200, 3600),
)

# -- capture order (see .ordering) -----------------------------------------------------------
ORDER = Counter(
    "facestream_matcher_order_total",
    "Faces by how they met the capture order: held until every camera of the store had "
    "promised past them, direct (captured before every promise, or from a camera that reports "
    "no progress), late (from a camera that had promised past them: decided on arrival).",
    ["how"],
)
ORDER_ESCAPED = Counter(
    "facestream_matcher_order_escaped_total",
    "Held faces decided because their store heard no camera progress for "
    "FACESTREAM_MATCHER_ORDER_WAIT_SECONDS (a detector down or restarting, the end of a day).",
)
ORDER_HELD = Gauge(
    "facestream_matcher_order_held",
    "Faces held now, waiting for every camera of their store to promise past them.",
)
PROGRESS_READ = Counter(
    "facestream_matcher_progress_read_total",
    "Camera progress records read back from encodings.v1 when a partition was assigned.",
)
