#!/usr/bin/env bash
# The whole test suite: lint, unit tests, then the end-to-end tests against a real native stack
# (PostgreSQL, Kafka, Apicurio Registry, Kafka Connect) that the tests start and stop themselves.
# Extra arguments go to pytest, e.g. scripts/test.sh -k candles
# Ends with a line of its own: how many tests ran, how many passed, failed, errored and were skipped, and
# how long the whole script took (from pytest's JUnit report and the script's own clock).
set -euo pipefail
started=$SECONDS
source "$(dirname "${BASH_SOURCE[0]}")/lib/settings.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh"
load_settings
find_python
cd "$PROJECT_ROOT"
report_dir="$(mktemp -d)"
trap 'rm -rf "$report_dir"' EXIT

echo "== artifacts"
bash scripts/fetch_artifacts.sh all
echo "== ruff"
ruff check .
echo "== pytest"
status=0
"$PYTHON" -m pytest -ra --junitxml="$report_dir/junit.xml" "$@" || status=$?
"$PYTHON" -m tests.summary "$report_dir/junit.xml" "$((SECONDS - started))" "$status"
exit "$status"
