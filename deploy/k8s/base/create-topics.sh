#!/usr/bin/env bash
# Creates facestream's Kafka topics, then checks that every topic (new or old) has the expected
# partition count and cleanup policy. Safe to run on every deploy: the compose `topics` service
# and the Kubernetes `topics` Job both run this file.
#
# A topic that already exists with another partition count is an error, never fixed silently:
# the store -> partition mapping decides which matcher owns a store, and identities.v1 must be
# partitioned exactly like encodings.v1 (docs/deploy.md, "Partitions").
#
# Environment:
#   FACESTREAM_KAFKA_BOOTSTRAP           brokers, e.g. kafka:9092 (required)
#   FACESTREAM_TOPIC_PARTITIONS          partitions of the store-keyed topics (default 4)
#   FACESTREAM_TOPIC_REPLICATION_FACTOR  replicas of every topic (default 1; 3 on a real cluster)
#   FACESTREAM_TOPIC_PREFIX              prepended to every topic name (default: none)
#   FACESTREAM_FRAMES_RETENTION_MS       how long raw frames (face images) are kept (default 1 day)
#   FACESTREAM_MATCHES_RETENTION_MS      how long match events are kept (default 7 days); must not
#                                        exceed the sink's FACESTREAM_SINK_DEDUP_TTL_DAYS (7), or a
#                                        replay from the start would count old events twice
#   KAFKA_TOPICS                         the kafka-topics tool (default: the apache/kafka image's)
set -euo pipefail

bootstrap="${FACESTREAM_KAFKA_BOOTSTRAP:?set FACESTREAM_KAFKA_BOOTSTRAP, e.g. kafka:9092}"
partitions="${FACESTREAM_TOPIC_PARTITIONS:-4}"
replication="${FACESTREAM_TOPIC_REPLICATION_FACTOR:-1}"
prefix="${FACESTREAM_TOPIC_PREFIX:-}"
frames_retention="${FACESTREAM_FRAMES_RETENTION_MS:-86400000}"
matches_retention="${FACESTREAM_MATCHES_RETENTION_MS:-604800000}"
kafka_topics="${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}"

for var in partitions replication frames_retention matches_retention; do
  if [[ ! "${!var}" =~ ^[1-9][0-9]*$ ]]; then
    echo "create-topics: $var must be a positive integer, got '${!var}'" >&2
    exit 2
  fi
done

# The broker's default record limit is 1 MB. A frame can be larger (the producers allow 8 MiB),
# and a dead letter carries the failed value (up to 1 MiB) as base64 inside JSON: ~1.4 MB.
frames="retention.ms=$frames_retention,max.message.bytes=8388608"
dlq="max.message.bytes=2097152"

# name|partitions|topic configs (comma-separated key=value)
topics=(
  "frames.v1|$partitions|$frames"
  "encodings.v1|$partitions|"
  "matches.v1|$partitions|retention.ms=$matches_retention"
  "members.v1|1|cleanup.policy=compact"
  "identities.v1|$partitions|cleanup.policy=compact"
  "frames.v1.dlq|1|$dlq"
  "encodings.v1.dlq|1|$dlq"
  "matches.v1.dlq|1|$dlq"
)

for spec in "${topics[@]}"; do
  IFS='|' read -r name count configs <<<"$spec"
  args=(--bootstrap-server "$bootstrap" --create --if-not-exists --topic "$prefix$name"
    --partitions "$count" --replication-factor "$replication")
  IFS=',' read -r -a pairs <<<"$configs"
  for pair in ${pairs[@]+"${pairs[@]}"}; do
    args+=(--config "$pair")
  done
  "$kafka_topics" "${args[@]}"
done

# One describe for all topics (each call of the tool starts a JVM). The summary line of a topic
# reads "Topic: NAME<TAB>TopicId: ...<TAB>PartitionCount: N<TAB>...<TAB>Configs: k=v,...";
# the per-partition lines below it have no PartitionCount.
described="$("$kafka_topics" --bootstrap-server "$bootstrap" --describe --exclude-internal)"

status=0
for spec in "${topics[@]}"; do
  IFS='|' read -r name count configs <<<"$spec"
  summary="$(awk -v topic="$prefix$name" '
    $1 == "Topic:" && $2 == topic {
      for (i = 1; i < NF; i++) if ($i == "PartitionCount:") { print $(i + 1), $0; exit }
    }' <<<"$described")"
  if [[ -z "$summary" ]]; then
    echo "create-topics: $prefix$name is missing after creation" >&2
    status=1
    continue
  fi
  actual="${summary%% *}"
  if [[ "$actual" != "$count" ]]; then
    echo "create-topics: $prefix$name has $actual partitions, expected $count." \
      "Changing the partition count remaps stores to partitions; see docs/deploy.md." >&2
    status=1
  elif [[ "$configs" == *cleanup.policy=compact* && "$summary" != *cleanup.policy=compact* ]]; then
    echo "create-topics: $prefix$name must be compacted (cleanup.policy=compact)" >&2
    status=1
  else
    echo "create-topics: $prefix$name ok ($actual partitions${configs:+, $configs})"
  fi
done
exit "$status"
