#!/usr/bin/env bash
# The dead-letter topic: `show` counts what is in it by reason (with samples), `redrive` produces the
# selected retryable records to TICKS_TOPIC again once their cause is fixed, records each only after Kafka
# acknowledged it, prints a count per outcome and exits 1 if anything was not delivered (run it again).
# Run with --help (tests/test_dlq_tools.py).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/settings.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh"
find_python
cd "$PROJECT_ROOT"
exec "$PYTHON" -m control.dlq "$@"
