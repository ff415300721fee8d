#!/usr/bin/env bash
# The native stack (no Docker): PostgreSQL, Kafka (KRaft), Apicurio Registry, Kafka Connect, the chart page
# and the producer as processes on 127.0.0.1, same versions and config files as docker-compose.yml.
#
# Usage: scripts/stack.sh up|down|status|logs SERVICE [options]   (--help for details)
# State (data, logs, pids) lives in .stack/ (CRYPTOPIPE_STATE overrides); downloads in ~/.cache/cryptopipe.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/settings.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh"
find_python
cd "$PROJECT_ROOT"
exec "$PYTHON" -m stack "$@"
