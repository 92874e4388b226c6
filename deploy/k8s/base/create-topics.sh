#!/usr/bin/env bash
# Creates facestream's Kafka topics, then checks that every topic (new or old) has the expected
# partition count and cleanup policy, and warns about a topic created earlier whose retention or
# compaction settings differ from these (change them with kafka-configs.sh --alter). Safe to run on every deploy: the compose `topics` service
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
#   FACESTREAM_FRAMES_RETENTION_MS       raw frames, face images (default 6 h)
#   FACESTREAM_FRAMES_DLQ_RETENTION_MS   dead frames (default 24 h)
#   FACESTREAM_ENCODINGS_RETENTION_MS    face encodings, biometric (default 24 h)
#   FACESTREAM_ENCODINGS_DLQ_RETENTION_MS  dead encodings (default 48 h)
#   FACESTREAM_MATCHES_RETENTION_MS      match events (default 6 days); with daily segments an
#                                        event lives up to this + 1 day, which must not exceed
#                                        the sink's FACESTREAM_SINK_DEDUP_TTL_DAYS (7), or a
#                                        replay from the start would count old events twice
#   FACESTREAM_MATCHES_DLQ_RETENTION_MS  dead match events (default 7 days)
#   FACESTREAM_TOPIC_MIN_INSYNC_REPLICAS replicas that must have a write before producers
#                                        (acks=all) get their ack (default 2 when the
#                                        replication factor is 3 or more, else the broker's)
#   FACESTREAM_KAFKA_SECURITY_PROTOCOL, FACESTREAM_KAFKA_SSL_CAFILE, ..._SSL_CERTFILE, ..._SSL_KEYFILE,
#   ..._SSL_CHECK_HOSTNAME, ..._SASL_MECHANISM, ..._SASL_USERNAME, ..._SASL_PASSWORD(_FILE)
#                                        TLS and SASL as the workers read them (docs/deploy.md,
#                                        "Transport security"), given to the tool as a client
#                                        config file (an unencrypted PEM key only)
#   KAFKA_TOPICS                         the kafka-topics tool (default: the apache/kafka image's)
set -euo pipefail

bootstrap="${FACESTREAM_KAFKA_BOOTSTRAP:?set FACESTREAM_KAFKA_BOOTSTRAP, e.g. kafka:9092}"
partitions="${FACESTREAM_TOPIC_PARTITIONS:-4}"
replication="${FACESTREAM_TOPIC_REPLICATION_FACTOR:-1}"
prefix="${FACESTREAM_TOPIC_PREFIX:-}"
frames_retention="${FACESTREAM_FRAMES_RETENTION_MS:-21600000}"
frames_dlq_retention="${FACESTREAM_FRAMES_DLQ_RETENTION_MS:-86400000}"
encodings_retention="${FACESTREAM_ENCODINGS_RETENTION_MS:-86400000}"
encodings_dlq_retention="${FACESTREAM_ENCODINGS_DLQ_RETENTION_MS:-172800000}"
matches_retention="${FACESTREAM_MATCHES_RETENTION_MS:-518400000}"
matches_dlq_retention="${FACESTREAM_MATCHES_DLQ_RETENTION_MS:-604800000}"
min_isr="${FACESTREAM_TOPIC_MIN_INSYNC_REPLICAS:-}"
kafka_topics="${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}"

for var in partitions replication frames_retention frames_dlq_retention encodings_retention \
  encodings_dlq_retention matches_retention matches_dlq_retention ${min_isr:+min_isr}; do
  if [[ ! "${!var}" =~ ^[1-9][0-9]*$ ]]; then
    echo "create-topics: $var must be a positive integer, got '${!var}'" >&2
    exit 2
  fi
done
# TLS and SASL: the Java tool reads them from a --command-config file, written here from the
# workers' variables. It holds the password, so it is this user's only (umask), in TMPDIR (an
# emptyDir in the Job), and removed on exit.
client=()
protocol="${FACESTREAM_KAFKA_SECURITY_PROTOCOL:-PLAINTEXT}"
case "$protocol" in
  PLAINTEXT) ;;
  SSL | SASL_SSL | SASL_PLAINTEXT)
    umask 077
    client_config="$(mktemp "${TMPDIR:-/tmp}/create-topics-client.XXXXXX")"
    trap 'rm -f "$client_config" "$client_config.pem"' EXIT
    {
      echo "security.protocol=$protocol"
      if [[ $protocol != SASL_PLAINTEXT ]]; then
        if [[ -n "${FACESTREAM_KAFKA_SSL_CAFILE:-}" ]]; then
          echo "ssl.truststore.type=PEM"
          echo "ssl.truststore.location=$FACESTREAM_KAFKA_SSL_CAFILE"
        fi
        if [[ "${FACESTREAM_KAFKA_SSL_CHECK_HOSTNAME:-true}" =~ ^(false|False|FALSE|0|no)$ ]]; then
          echo "ssl.endpoint.identification.algorithm="
        fi
        if [[ -n "${FACESTREAM_KAFKA_SSL_CERTFILE:-}" ]]; then
          # Java takes the key and its certificate chain from one PEM file.
          if [[ -n "${FACESTREAM_KAFKA_SSL_KEYFILE:-}" ]]; then
            cat "$FACESTREAM_KAFKA_SSL_KEYFILE" "$FACESTREAM_KAFKA_SSL_CERTFILE" >"$client_config.pem"
          else
            cat "$FACESTREAM_KAFKA_SSL_CERTFILE" >"$client_config.pem"
          fi
          echo "ssl.keystore.type=PEM"
          echo "ssl.keystore.location=$client_config.pem"
        fi
      fi
      if [[ $protocol == SASL_* ]]; then
        user="${FACESTREAM_KAFKA_SASL_USERNAME:?set FACESTREAM_KAFKA_SASL_USERNAME for $protocol}"
        if [[ -n "${FACESTREAM_KAFKA_SASL_PASSWORD_FILE:-}" ]]; then
          password="$(<"$FACESTREAM_KAFKA_SASL_PASSWORD_FILE")"
        else
          password="${FACESTREAM_KAFKA_SASL_PASSWORD:?set FACESTREAM_KAFKA_SASL_PASSWORD_FILE}"
        fi
        mechanism="${FACESTREAM_KAFKA_SASL_MECHANISM:-SCRAM-SHA-512}"
        case "$mechanism" in
          PLAIN) module=org.apache.kafka.common.security.plain.PlainLoginModule ;;
          SCRAM-SHA-256 | SCRAM-SHA-512)
            module=org.apache.kafka.common.security.scram.ScramLoginModule ;;
          *)
            echo "create-topics: unknown FACESTREAM_KAFKA_SASL_MECHANISM '$mechanism'" >&2
            exit 2
            ;;
        esac
        # JAAS quoting (\ and "), then the properties file's own (\).
        jaas() { local v="${1//\\/\\\\}"; v="${v//\"/\\\"}"; printf '%s' "${v//\\/\\\\}"; }
        echo "sasl.mechanism=$mechanism"
        echo "sasl.jaas.config=$module required username=\"$(jaas "$user")\"" \
          "password=\"$(jaas "$password")\";"
      fi
    } >"$client_config"
    client=(--command-config "$client_config")
    ;;
  *)
    echo "create-topics: unknown FACESTREAM_KAFKA_SECURITY_PROTOCOL '$protocol'" >&2
    exit 2
    ;;
esac

# With acks=all (every facestream producer) and 3 replicas, a write acknowledged by 2 survives
# the loss of any one broker; 1 replica (a dev broker) cannot require more than itself.
if [[ -z "$min_isr" ]] && ((replication >= 3)); then min_isr=2; fi
if [[ -n "$min_isr" ]] && ((min_isr > replication)); then
  echo "create-topics: min.insync.replicas ($min_isr) exceeds the replication factor" \
    "($replication): no write could ever be acknowledged" >&2
  exit 2
fi

# The same configs as facestream/runtime/topics.py (tests/deploy checks it); why these values:
# docs/privacy.md. Time retention deletes closed segments only, so segments roll hourly (daily
# for the week-long topics): a record is gone within retention + segment.ms.
hour=3600000
day=86400000
deleted="cleanup.policy=delete"
frames="$deleted,retention.ms=$frames_retention,segment.ms=$hour,max.message.bytes=8388608"
encodings="$deleted,retention.ms=$encodings_retention,segment.ms=$hour"
matches="$deleted,retention.ms=$matches_retention,segment.ms=$day"
# A dead letter that keeps its payload (FACESTREAM_DLQ_KEEP_PAYLOAD) carries up to 1 MiB of it
# as base64 inside JSON: ~1.4 MB, above the broker's default 1 MB.
dlq="max.message.bytes=2097152"
frames_dlq="$deleted,retention.ms=$frames_dlq_retention,segment.ms=$hour,$dlq"
encodings_dlq="$deleted,retention.ms=$encodings_dlq_retention,segment.ms=$hour,$dlq"
matches_dlq="$deleted,retention.ms=$matches_dlq_retention,segment.ms=$day,$dlq"
# Erased values are compacted away within ~segment.ms + max.compaction.lag.ms (7 h) of their
# tombstone; tombstones stay 7 days, so a consumer stopped for up to a week still sees them.
compact="cleanup.policy=compact,segment.ms=$hour,min.cleanable.dirty.ratio=0.1"
compact="$compact,max.compaction.lag.ms=21600000,delete.retention.ms=604800000"

# name|partitions|topic configs (comma-separated key=value)
topics=(
  "frames.v1|$partitions|$frames"
  "encodings.v1|$partitions|$encodings"
  "matches.v1|$partitions|$matches"
  "members.v1|1|$compact"
  "identities.v1|$partitions|$compact"
  "member-samples.v1|1|$compact"
  "frames.v1.dlq|1|$frames_dlq"
  "encodings.v1.dlq|1|$encodings_dlq"
  "matches.v1.dlq|1|$matches_dlq"
)

for spec in "${topics[@]}"; do
  IFS='|' read -r name count configs <<<"$spec"
  args=(--bootstrap-server "$bootstrap" --create --if-not-exists --topic "$prefix$name"
    --partitions "$count" --replication-factor "$replication")
  IFS=',' read -r -a pairs <<<"$configs${min_isr:+,min.insync.replicas=$min_isr}"
  for pair in ${pairs[@]+"${pairs[@]}"}; do
    args+=(--config "$pair")
  done
  "$kafka_topics" ${client[@]+"${client[@]}"} "${args[@]}"
done

# One describe for all topics (each call of the tool starts a JVM). The summary line of a topic
# reads "Topic: NAME<TAB>TopicId: ...<TAB>PartitionCount: N<TAB>...<TAB>Configs: k=v,...";
# the per-partition lines below it have no PartitionCount.
described="$("$kafka_topics" ${client[@]+"${client[@]}"} --bootstrap-server "$bootstrap" \
  --describe --exclude-internal)"

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
    # A topic created before these settings keeps its own: say so, and leave the change (which
    # may delete data at once) to a person.
    have=",${summary##*Configs: },"
    IFS=',' read -r -a pairs <<<"$configs${min_isr:+,min.insync.replicas=$min_isr}"
    for pair in "${pairs[@]}"; do
      if [[ "$have" != *",$pair,"* ]]; then
        echo "create-topics: warning: $prefix$name lacks $pair (created before it?); see" \
          "docs/privacy.md: kafka-configs.sh --alter --entity-type topics" \
          "--entity-name $prefix$name --add-config $pair" >&2
      fi
    done
    echo "create-topics: $prefix$name ok ($actual partitions, $configs)"
  fi
done
exit "$status"
