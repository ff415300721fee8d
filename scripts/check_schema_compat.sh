#!/usr/bin/env bash
# Is every Avro schema in schemas/ compatible with all its earlier versions in git history?
# Asks a real registry (the stack's by default, or --registry URL); --live checks against a running
# registry's latest version instead. Exit 0 compatible, 1 incompatible, 2 could not check.
# Levels per schema: schemas/compatibility.json. Run `scripts/check_schema_compat.sh --help`.
# It registers and deletes throwaway subjects: as the registry's admin user (REGISTRY_ADMIN_PASSWORD from the
# environment, REGISTRY_ADMIN_PASSWORD_FILE, or the native stack's .stack/secrets.env; docs/registry-auth.md).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/settings.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh"
find_python
exec "$PYTHON" -m control.schema_compat "$@"
