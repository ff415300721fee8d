#!/usr/bin/env bash
# Is every Avro schema in schemas/ compatible with all its earlier versions in git history?
# Asks a real registry (the stack's by default, or --registry URL); --live checks against a running
# registry's latest version instead. Exit 0 compatible, 1 incompatible, 2 could not check.
# Levels per schema: schemas/compatibility.json. Run `scripts/check_schema_compat.sh --help`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/settings.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh"
load_settings
# Inside scripts/test.sh (or with PYTHON exported) reuse that interpreter; otherwise the project's venv.
[[ -n "${PYTHON:-}" ]] || ensure_venv
export PYTHONPATH="$PROJECT_ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m stack.schema_compat "$@"
