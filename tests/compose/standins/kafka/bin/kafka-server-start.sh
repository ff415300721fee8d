#!/usr/bin/env bash
# Stand-in for Kafka's bin/kafka-server-start.sh: kafka.Kafka with the broker's defaults for the heap
# (-Xmx1G -Xms1G) and logging (config/log4j2.yaml) unless KAFKA_HEAP_OPTS / KAFKA_LOG4J_OPTS are set.
if [[ $# -lt 1 ]]; then
  echo "USAGE: $0 [-daemon] server.properties [--override property=value]*" >&2
  exit 1
fi
base_dir="$(dirname "${BASH_SOURCE[0]}")"
export KAFKA_LOG4J_OPTS="${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$base_dir/../config/log4j2.yaml}"
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}"
EXTRA_ARGS="${EXTRA_ARGS--name kafkaServer -loggc}"
if [[ "$1" == -daemon ]]; then EXTRA_ARGS="-daemon $EXTRA_ARGS"; shift; fi
# shellcheck disable=SC2086
exec "$base_dir/kafka-run-class.sh" $EXTRA_ARGS kafka.Kafka "$@"
