#!/usr/bin/env bash
# Stand-in for /opt/jboss/container/java/run/run-java.sh of Red Hat's UBI OpenJDK runtime images (the
# apicurio-registry image's CMD), honouring the same environment variables:
#   JAVA_APP_DIR (default /deployments; the JVM runs there), JAVA_LIB_DIR, JAVA_APP_JAR or JAVA_MAIN_CLASS
#   (neither: quarkus-app/quarkus-run.jar, else the only *.jar in JAVA_APP_DIR), JAVA_CLASSPATH, JAVA_ARGS,
#   JAVA_APP_NAME (the process name, default java).
#   JAVA_OPTS: when set (even empty) the JVM gets exactly these options and none of the defaults below.
#   Otherwise: JAVA_DEBUG / JAVA_DEBUG_PORT, -XX:MaxRAMPercentage=JAVA_MAX_MEM_RATIO (default 80, 0 = none),
#   the GC_* settings (default -XX:+UseParallelGC and its ratios), JAVA_DIAGNOSTICS,
#   -XX:+ExitOnOutOfMemoryError, then JAVA_OPTS_APPEND (last, so an -Xmx there wins over the ratio).
# Not honoured: HTTP(S)_PROXY / NO_PROXY translation, run-env.sh files, the classpath file of JAVA_LIB_DIR.
set -eo pipefail

info() { echo "INFO $*"; }
fail() { echo "ERROR $*" >&2; exit 1; }

app_dir="${JAVA_APP_DIR:-/deployments}"
lib_dir="${JAVA_LIB_DIR:-$app_dir}"
cd "$app_dir" 2>/dev/null || fail "No directory $app_dir found"

main_class="${JAVA_MAIN_CLASS:-}"
jar="${JAVA_APP_JAR:-}"
if [[ -z "$main_class" && -z "$jar" ]]; then
  if [[ -f quarkus-app/quarkus-run.jar ]]; then
    info "quarkus fast-jar package type detected"
    jar=quarkus-app/quarkus-run.jar
  else
    shopt -s nullglob
    candidates=()
    for f in *.jar; do [[ "$f" == original-* ]] || candidates+=("$f"); done
    shopt -u nullglob
    [[ ${#candidates[@]} -eq 1 ]] \
      || fail "Neither \$JAVA_MAIN_CLASS nor \$JAVA_APP_JAR is set and ${#candidates[@]} JARs found in $app_dir (1 expected)"
    jar="${candidates[0]}"
  fi
fi
if [[ -n "$jar" && "$jar" != /* ]]; then
  if [[ -f "$app_dir/$jar" ]]; then jar="$app_dir/$jar"
  elif [[ -f "$lib_dir/$jar" ]]; then jar="$lib_dir/$jar"
  else fail "No $jar found in $app_dir $lib_dir"; fi
fi
[[ -z "$jar" || -f "$jar" ]] || fail "No such file $jar"
set -o noglob  # options are split on blanks below, never expanded as file patterns

default_options() {
  local ratio
  [[ -z "${JAVA_DEBUG:-}" ]] \
    || echo "-agentlib:jdwp=transport=dt_socket,server=y,suspend=n,address=${JAVA_DEBUG_PORT:-5005}"
  case "${JAVA_MAX_MEM_RATIO:-}" in
    0) ;;
    "") echo "-XX:MaxRAMPercentage=80.0" ;;
    *) printf -v ratio '%.0f' "$JAVA_MAX_MEM_RATIO"; echo "-XX:MaxRAMPercentage=$ratio.0" ;;
  esac
  echo "${GC_CONTAINER_OPTIONS:--XX:+UseParallelGC}" "-XX:MinHeapFreeRatio=${GC_MIN_HEAP_FREE_RATIO:-10}" \
    "-XX:MaxHeapFreeRatio=${GC_MAX_HEAP_FREE_RATIO:-20}" "-XX:GCTimeRatio=${GC_TIME_RATIO:-4}" \
    "-XX:AdaptiveSizePolicyWeight=${GC_ADAPTIVE_SIZE_POLICY_WEIGHT:-90}"
  [[ -z "${GC_MAX_METASPACE_SIZE:-}" ]] || echo "-XX:MaxMetaspaceSize=${GC_MAX_METASPACE_SIZE}m"
  if [[ -n "${GC_METASPACE_SIZE:-}" ]]; then
    local size="$GC_METASPACE_SIZE"
    [[ -z "${GC_MAX_METASPACE_SIZE:-}" ]] || ((size <= GC_MAX_METASPACE_SIZE)) || size="$GC_MAX_METASPACE_SIZE"
    echo "-XX:MetaspaceSize=${size}m"
  fi
  [[ -z "${JAVA_DIAGNOSTICS:-}" ]] || echo "-Xlog:gc::utctime -XX:NativeMemoryTracking=summary"
  echo "-XX:+ExitOnOutOfMemoryError"
  echo "${JAVA_OPTS_APPEND:-}"
}

if [[ -n "${JAVA_OPTS+set}" ]]; then options="$JAVA_OPTS"; else options="$(default_options)"; fi
read -r -d '' -a words <<<"$options" || true
options="${words[*]}"  # one line, single spaces

classpath="."
[[ "$lib_dir" == "$app_dir" ]] || classpath+=":$lib_dir"
if [[ -n "${JAVA_CLASSPATH:-}" ]]; then
  classpath="$JAVA_CLASSPATH"
elif [[ -n "$main_class" ]]; then
  classpath+="${jar:+:$jar}:$app_dir/*"
fi
if [[ -n "$main_class" ]]; then target=("$main_class"); else target=(-jar "$jar"); fi

masked=""
for word in $options; do
  if [[ "${word%%=*}" =~ [Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd] ]]; then masked+="${word%%=*}=***** "; else masked+="$word "; fi
done
info "exec -a \"${JAVA_APP_NAME-java}\" java ${masked}-cp \"$classpath\" ${target[*]} $* ${JAVA_ARGS:-}"
info "running in $PWD"
# shellcheck disable=SC2086
exec -a "${JAVA_APP_NAME-java}" java $options -cp "$classpath" "${target[@]}" "$@" ${JAVA_ARGS:-}
