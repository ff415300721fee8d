#!/usr/bin/env bash
# Stand-in for Kafka's bin/connect-distributed.sh: a Connect worker in distributed mode, with Connect's
# defaults for the heap (-Xms256M -Xmx2G) and logging (config/connect-log4j2.yaml) unless KAFKA_HEAP_OPTS /
# KAFKA_LOG4J_OPTS are set; KAFKA_OPTS and the rest as in kafka-run-class.sh.
if [[ $# -lt 1 ]]; then
  echo "USAGE: $0 [-daemon] connect-distributed.properties" >&2
  exit 1
fi
base_dir="$(dirname "${BASH_SOURCE[0]}")"
export KAFKA_LOG4J_OPTS="${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$base_dir/../config/connect-log4j2.yaml}"
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256M -Xmx2G}"
EXTRA_ARGS="${EXTRA_ARGS--name connectDistributed}"
if [[ "$1" == -daemon ]]; then EXTRA_ARGS="-daemon $EXTRA_ARGS"; shift; fi
# shellcheck disable=SC2086
exec "$base_dir/kafka-run-class.sh" $EXTRA_ARGS org.apache.kafka.connect.cli.ConnectDistributed "$@"
