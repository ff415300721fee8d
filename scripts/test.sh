#!/usr/bin/env bash
# The whole test suite: lint, unit tests, then the end-to-end tests against a real native stack
# (PostgreSQL, Kafka, Apicurio Registry, Kafka Connect) that the tests start and stop themselves.
# Extra arguments go to pytest, e.g. scripts/test.sh -k candles
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/settings.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh"
load_settings
find_python
cd "$PROJECT_ROOT"

echo "== artifacts"
bash scripts/fetch_artifacts.sh all
echo "== ruff"
ruff check .
echo "== pytest"
exec "$PYTHON" -m pytest -ra "$@"
