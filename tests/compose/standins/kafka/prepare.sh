#!/usr/bin/env bash
# Completes the build context of the apache/kafka stand-in (a copy of this folder): libs/ gets the Kafka
# jars the native stack runs, from the artifact cache (scripts/fetch_artifacts.sh kafka, fetched if missing).
# Usage: prepare.sh CONTEXT_DIR    (KAFKA_VERSION and CRYPTOPIPE_CACHE: environment, else .env)
set -euo pipefail
context="${1:?usage: prepare.sh CONTEXT_DIR}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
[[ -f "$root/scripts/lib/settings.sh" ]] || root="$(git rev-parse --show-toplevel)"
# shellcheck source=scripts/lib/settings.sh
source "$root/scripts/lib/settings.sh"
load_settings "$root/.env"

libs="$CRYPTOPIPE_CACHE/kafka-$KAFKA_VERSION/libs"
if [[ ! -f "$CRYPTOPIPE_CACHE/kafka-$KAFKA_VERSION/.complete" ]]; then
  bash "$root/scripts/fetch_artifacts.sh" kafka >&2
fi
[[ -f "$libs/kafka_2.13-$KAFKA_VERSION.jar" ]] \
  || { echo "ERROR: $libs has no kafka_2.13-$KAFKA_VERSION.jar" >&2; exit 1; }
rm -rf "$context/libs"
cp -r "$libs" "$context/libs"
