#!/bin/sh
# Creates MaskWatch's Kafka topics when missing and reconciles them when present (partitions only grow):
#   frames       MW_PARTITIONS partitions, short retention (frames are worthless after a minute),
#                segments rolled often so retention actually applies, max.message.bytes 4 MiB + 64 KiB
#   frames.dlq   one partition, a week of retention, the same message size limit
# Run by compose's kafka-init service and by the Kubernetes Job in this folder, with Apache Kafka's own
# tools (apache/kafka image). KAFKA_CLIENT_CONFIG may name a client.properties (SASL/TLS) when it exists.
set -eu

bootstrap=${BOOTSTRAP:?BOOTSTRAP must name the Kafka bootstrap servers}
topic=${MW_TOPIC:-frames}
dlq=${MW_DLQ_TOPIC:-frames.dlq}
partitions=${MW_PARTITIONS:-12}
replication=${MW_REPLICATION_FACTOR:-1}
retention_ms=${MW_FRAMES_RETENTION_MS:-60000}
segment_ms=${MW_FRAMES_SEGMENT_MS:-30000}
dlq_retention_ms=${MW_DLQ_RETENTION_MS:-604800000}
max_message_bytes=4259840 # maskwatch/topics.py MAX_MESSAGE_BYTES
bin=${KAFKA_BIN:-/opt/kafka/bin}

set -- --bootstrap-server "$bootstrap"
if [ -n "${KAFKA_CLIENT_CONFIG:-}" ] && [ -f "$KAFKA_CLIENT_CONFIG" ]; then
  set -- "$@" --command-config "$KAFKA_CLIENT_CONFIG"
fi

tries=0
until "$bin/kafka-topics.sh" "$@" --list >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge "${KAFKA_WAIT_TRIES:-30}" ]; then
    echo "create-topics: no Kafka broker answers at $bootstrap" >&2
    exit 1
  fi
  sleep "${KAFKA_WAIT_S:-2}"
done

partitions_of() {
  "$bin/kafka-topics.sh" "$@" --describe --topic "$topic_name" | grep -c 'Partition: ' || true
}

ensure() { # name partitions config...
  topic_name=$1 wanted=$2
  shift 2
  configs=$*
  set -- --bootstrap-server "$bootstrap"
  if [ -n "${KAFKA_CLIENT_CONFIG:-}" ] && [ -f "$KAFKA_CLIENT_CONFIG" ]; then
    set -- "$@" --command-config "$KAFKA_CLIENT_CONFIG"
  fi
  create_args=""
  for c in $configs; do create_args="$create_args --config $c"; done
  # shellcheck disable=SC2086 # create_args is a list of --config k=v words without spaces
  "$bin/kafka-topics.sh" "$@" --create --if-not-exists --topic "$topic_name" \
    --partitions "$wanted" --replication-factor "$replication" $create_args
  have=$(partitions_of "$@")
  if [ "$have" -lt "$wanted" ]; then
    echo "create-topics: $topic_name has $have partitions, growing to $wanted"
    "$bin/kafka-topics.sh" "$@" --alter --topic "$topic_name" --partitions "$wanted"
  elif [ "$have" -gt "$wanted" ]; then
    echo "create-topics: $topic_name has $have partitions (more than $wanted); Kafka cannot shrink a topic" >&2
  fi
  "$bin/kafka-configs.sh" "$@" --alter --entity-type topics --entity-name "$topic_name" \
    --add-config "$(echo "$configs" | tr ' ' ',')"
  echo "create-topics: $topic_name ready: $wanted partitions, $configs"
}

ensure "$topic" "$partitions" \
  "retention.ms=$retention_ms" "segment.ms=$segment_ms" "max.message.bytes=$max_message_bytes" "cleanup.policy=delete"
ensure "$dlq" 1 \
  "retention.ms=$dlq_retention_ms" "max.message.bytes=$max_message_bytes" "cleanup.policy=delete"
