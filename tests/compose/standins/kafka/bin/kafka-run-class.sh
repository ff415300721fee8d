#!/usr/bin/env bash
# Stand-in for Kafka's bin/kafka-run-class.sh: runs CLASS on the JVM with every jar in ../libs, taking the
# same environment variables as the original and putting them on the java command line in the same order:
#   KAFKA_HEAP_OPTS (default -Xmx256M), KAFKA_JVM_PERFORMANCE_OPTS (default G1 settings), KAFKA_GC_LOG_OPTS
#   (with -loggc), KAFKA_JMX_OPTS / JMX_PORT, KAFKA_LOG4J_OPTS (default config/tools-log4j2.yaml),
#   LOG_DIR (-Dkafka.logs.dir, default ../logs), CLASSPATH (prepended), KAFKA_OPTS, JAVA_HOME.
# Options before CLASS: -name NAME, -loggc, -daemon (runs in the background, output in LOG_DIR/NAME.out).
set -o errexit -o nounset

if [[ $# -lt 1 ]]; then
  echo "USAGE: $0 [-daemon] [-name servicename] [-loggc] classname [opts]" >&2
  exit 1
fi

base_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

daemon=0 loggc=0 name=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -name) name="$2"; shift 2 ;;
    -loggc) loggc=1; shift ;;
    -daemon) daemon=1; shift ;;
    *) break ;;
  esac
done

CLASSPATH="${CLASSPATH:+$CLASSPATH:}$base_dir/libs/*"
LOG_DIR="${LOG_DIR:-$base_dir/logs}"
mkdir -p "$LOG_DIR" 2>/dev/null || true

KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx256M}"
KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}"
KAFKA_LOG4J_OPTS="${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$base_dir/config/tools-log4j2.yaml}"
KAFKA_JMX_OPTS="${KAFKA_JMX_OPTS:--Dcom.sun.management.jmxremote=true -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false}"
if [[ -n "${JMX_PORT:-}" ]]; then
  KAFKA_JMX_OPTS+=" -Dcom.sun.management.jmxremote.port=$JMX_PORT"
  [[ "$KAFKA_JMX_OPTS" == *jmxremote.rmi.port=* ]] || KAFKA_JMX_OPTS+=" -Dcom.sun.management.jmxremote.rmi.port=$JMX_PORT"
fi
KAFKA_GC_LOG_OPTS="${KAFKA_GC_LOG_OPTS:-}"
if ((loggc)) && [[ -z "$KAFKA_GC_LOG_OPTS" ]]; then
  KAFKA_GC_LOG_OPTS="-Xlog:gc*:file=$LOG_DIR/${name:-kafka}-gc.log:time,tags:filecount=10,filesize=100M"
fi
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

# The *_OPTS variables are space-separated option lists (word splitting wanted), never glob patterns.
set -o noglob
# shellcheck disable=SC2206
cmd=("$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $KAFKA_GC_LOG_OPTS $KAFKA_JMX_OPTS
     "-Dkafka.logs.dir=$LOG_DIR" $KAFKA_LOG4J_OPTS -cp "$CLASSPATH" ${KAFKA_OPTS:-} "$@")
set +o noglob

if ((daemon)); then
  nohup "${cmd[@]}" >"$LOG_DIR/${name:-kafka}.out" 2>&1 </dev/null &
else
  exec "${cmd[@]}"
fi
