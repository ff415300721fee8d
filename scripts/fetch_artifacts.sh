#!/usr/bin/env bash
# Downloads the stack's artifacts (Maven Central; the chart's library: npm) into a cache outside the clone:
#   kafka     Kafka broker + Connect worker runtime jars        -> $CRYPTOPIPE_CACHE/kafka-<v>/libs
#   registry  Apicurio Registry server                          -> $CRYPTOPIPE_CACHE/registry-<v>
#   plugins   Connect plugins (Debezium JDBC sink, Apicurio AvroConverter), one folder each, plus the
#             project's own connect/plugin (built here with Maven, its unit tests included) in the
#             converter's folder                              -> $CRYPTOPIPE_CACHE/plugins-<jdbc>-<conv>
#   chart     the chart page's library, lightweight-charts (npm) -> $CRYPTOPIPE_CACHE/lightweight-charts-<v>
# Idempotent: a component already fetched is skipped (quietly); connect/plugin is rebuilt when its
# sources change. Versions come from .env.
# Usage: scripts/fetch_artifacts.sh [all|kafka|registry|plugins|chart ...] [--plugins-dir DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/settings.sh"
load_settings

usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

what=()
plugins_dir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --plugins-dir) plugins_dir="$2"; shift 2 ;;
    all|kafka|registry|plugins|chart) what+=("$1"); shift ;;
    *) echo "ERROR: unknown argument '$1' (expected all|kafka|registry|plugins|chart, --plugins-dir DIR)" >&2; exit 2 ;;
  esac
done

MAVEN_DIR="$PROJECT_ROOT/stack/maven"
KAFKA_HOME_DIR="$CRYPTOPIPE_CACHE/kafka-$KAFKA_VERSION"
REGISTRY_HOME_DIR="$CRYPTOPIPE_CACHE/registry-$APICURIO_REGISTRY_VERSION"
PLUGINS_HOME_DIR="${plugins_dir:-$CRYPTOPIPE_CACHE/plugins-$DEBEZIUM_JDBC_VERSION-$APICURIO_CONVERTER_VERSION}"
CHART_ASSETS_DIR="$CRYPTOPIPE_CACHE/lightweight-charts-$LIGHTWEIGHT_CHARTS_VERSION"

mvn_run() {
  local pom="$1"; shift
  local work
  work="$(mktemp -d)"
  # A copy of the pom in a scratch folder keeps target/ out of the clone.
  cp "$pom" "$work/pom.xml"
  if ! mvn -B -s "$MAVEN_DIR/settings.xml" -f "$work/pom.xml" "$@" package >"$work/maven.log" 2>&1; then
    echo "ERROR: Maven failed for $pom; last lines of its log:" >&2
    tail -n 40 "$work/maven.log" >&2
    rm -rf "$work"
    return 1
  fi
  grep -E '^\[INFO\] (Downloaded from|Unpacking|Copying)' "$work/maven.log" | sed 's/^/  /' | tail -n 5 || true
  rm -rf "$work"
}

fetched() { [[ -f "$1/.complete" ]]; }

# Empties a folder and keeps the folder itself: it may be a mount point (compose's connect-plugins volume),
# which cannot be removed ("Device or resource busy").
empty_dir() {
  mkdir -p "$1"
  find "$1" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
}

# .complete holds the hash of the pom the jars were resolved from. A cache from an older pom gets the
# jars it lacks added beside the ones it has, which stay untouched (a running stack keeps its open jars);
# a changed version of a jar already there needs a fresh fetch (delete the folder).
fetch_kafka() {
  local pom="$MAVEN_DIR/kafka/pom.xml" stamp added jar
  stamp="$(sha1sum "$pom" | cut -c1-40)"
  if fetched "$KAFKA_HOME_DIR"; then
    [[ "$(cat "$KAFKA_HOME_DIR/.complete")" == "$stamp" ]] && return 0
    echo "updating Kafka $KAFKA_VERSION in $KAFKA_HOME_DIR: adding what stack/maven/kafka/pom.xml now lists ..."
    added="$(mktemp -d)"
    mvn_run "$pom" -Dkafka.version="$KAFKA_VERSION" -Doutput.dir="$added"
    for jar in "$added"/*.jar; do
      [[ -e "$KAFKA_HOME_DIR/libs/$(basename "$jar")" ]] || { cp "$jar" "$KAFKA_HOME_DIR/libs/"; echo "  added $(basename "$jar")"; }
    done
    rm -rf "$added"
    echo "$stamp" > "$KAFKA_HOME_DIR/.complete"
    return 0
  fi
  echo "fetching Kafka $KAFKA_VERSION (broker + Connect runtime) into $KAFKA_HOME_DIR ..."
  empty_dir "$KAFKA_HOME_DIR"
  mvn_run "$pom" -Dkafka.version="$KAFKA_VERSION" -Doutput.dir="$KAFKA_HOME_DIR/libs"
  echo "$stamp" > "$KAFKA_HOME_DIR/.complete"
  echo "  $(ls "$KAFKA_HOME_DIR/libs" | wc -l) jars"
}

fetch_registry() {
  if fetched "$REGISTRY_HOME_DIR"; then return 0; fi
  echo "fetching Apicurio Registry $APICURIO_REGISTRY_VERSION into $REGISTRY_HOME_DIR (about 160 MB) ..."
  empty_dir "$REGISTRY_HOME_DIR"
  mvn_run "$MAVEN_DIR/archives/pom.xml" -Dapicurio.registry.version="$APICURIO_REGISTRY_VERSION" \
    -Ddebezium.jdbc.version="$DEBEZIUM_JDBC_VERSION" -Dregistry.dir="$REGISTRY_HOME_DIR" \
    -Dplugins.dir="$(mktemp -d)"
  local jar
  jar="$(find "$REGISTRY_HOME_DIR" -name quarkus-run.jar -print -quit)"
  [[ -n "$jar" ]] || { echo "ERROR: no quarkus-run.jar inside the registry archive" >&2; return 1; }
  echo "$jar" > "$REGISTRY_HOME_DIR/.complete"
}

fetch_plugins() {
  if fetched "$PLUGINS_HOME_DIR"; then return 0; fi
  echo "fetching Connect plugins (Debezium JDBC sink $DEBEZIUM_JDBC_VERSION, Apicurio converter $APICURIO_CONVERTER_VERSION) into $PLUGINS_HOME_DIR ..."
  empty_dir "$PLUGINS_HOME_DIR"
  mvn_run "$MAVEN_DIR/archives/pom.xml" -Dskip.registry=true -Dapicurio.registry.version="$APICURIO_REGISTRY_VERSION" \
    -Ddebezium.jdbc.version="$DEBEZIUM_JDBC_VERSION" -Dplugins.dir="$PLUGINS_HOME_DIR"
  mvn_run "$MAVEN_DIR/converter/pom.xml" -Dapicurio.converter.version="$APICURIO_CONVERTER_VERSION" \
    -Doutput.dir="$PLUGINS_HOME_DIR/apicurio-converter"
  [[ -d "$PLUGINS_HOME_DIR/debezium-connector-jdbc" ]] || { echo "ERROR: debezium-connector-jdbc folder missing after unpack" >&2; return 1; }
  touch "$PLUGINS_HOME_DIR/.complete"
}

# The project's own plugin (tick contract transform, registry-outage converter wrapper) goes into the
# Apicurio converter's folder: the wrapper loads the converter's classes through that folder's loader.
build_project_plugin() {
  local src="$PROJECT_ROOT/connect/plugin" digest marker work
  digest="$(cd "$src" && find pom.xml src -type f -print0 | sort -z | xargs -0 sha1sum | sha1sum | cut -c1-12)"
  marker="$PLUGINS_HOME_DIR/.cryptopipe-connect-$digest"
  if [[ -f "$marker" ]]; then return 0; fi
  echo "building the project's Connect plugin (connect/plugin) into $PLUGINS_HOME_DIR/apicurio-converter ..."
  work="$(mktemp -d)"
  cp -r "$src/." "$work/"  # a scratch copy keeps target/ out of the clone (and works on a read-only mount)
  if ! mvn -B -s "$MAVEN_DIR/settings.xml" -f "$work/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
       -Dapicurio.converter.version="$APICURIO_CONVERTER_VERSION" package >"$work/maven.log" 2>&1; then
    echo "ERROR: building connect/plugin failed; last lines of the Maven log:" >&2
    tail -n 60 "$work/maven.log" >&2
    rm -rf "$work"
    return 1
  fi
  grep -E 'Tests run:.*Fail' "$work/maven.log" | tail -n 1 | sed 's/^/  /' || true
  cp "$work/target/cryptopipe-connect.jar" "$PLUGINS_HOME_DIR/apicurio-converter/cryptopipe-connect.jar"
  rm -f "$PLUGINS_HOME_DIR"/.cryptopipe-connect-*
  touch "$marker"
  rm -rf "$work"
}

# The chart library as npm publishes it (npm checks the tarball against the registry's integrity hash);
# the page serves the standalone build from here, never from a CDN.
fetch_chart() {
  if fetched "$CHART_ASSETS_DIR"; then return 0; fi
  command -v npm >/dev/null || { echo "ERROR: npm is required to fetch lightweight-charts; install Node.js (apt-get install npm)" >&2; return 1; }
  echo "fetching lightweight-charts $LIGHTWEIGHT_CHARTS_VERSION (npm) into $CHART_ASSETS_DIR ..."
  local work
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "lightweight-charts@$LIGHTWEIGHT_CHARTS_VERSION" >/dev/null) \
    || { echo "ERROR: npm pack lightweight-charts@$LIGHTWEIGHT_CHARTS_VERSION failed" >&2; rm -rf "$work"; return 1; }
  empty_dir "$CHART_ASSETS_DIR"
  tar -xzf "$work/lightweight-charts-$LIGHTWEIGHT_CHARTS_VERSION.tgz" -C "$CHART_ASSETS_DIR" --strip-components=1 \
    package/LICENSE package/package.json package/dist/lightweight-charts.standalone.production.js
  rm -rf "$work"
  touch "$CHART_ASSETS_DIR/.complete"
}

[[ ${#what[@]} -gt 0 ]] || what=(all)
[[ "${what[*]}" == chart ]] || command -v mvn >/dev/null \
  || { echo "ERROR: Maven (mvn) is required to fetch artifacts; install it (apt-get install maven)" >&2; exit 1; }
for component in "${what[@]}"; do
  case "$component" in
    all) fetch_kafka; fetch_registry; fetch_plugins; build_project_plugin; fetch_chart ;;
    chart) fetch_chart ;;
    kafka) fetch_kafka ;;
    registry) fetch_registry ;;
    plugins) fetch_plugins; build_project_plugin ;;
  esac
done
echo "artifacts ready (${what[*]}) in $CRYPTOPIPE_CACHE"
