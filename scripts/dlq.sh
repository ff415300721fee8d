#!/usr/bin/env bash
# The dead-letter topic: `show` counts what is in it by reason (with samples), `redrive` produces
# selected records to their topic again once their cause is fixed (idempotent). Run with --help.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/settings.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh"
find_python
cd "$PROJECT_ROOT"
exec "$PYTHON" -m control.dlq "$@"
