#!/usr/bin/env bash
# Registers (creates or updates, idempotently) the JDBC sink connector with Kafka Connect and waits
# until the connector and every task are RUNNING. Exits non-zero with Connect's validation errors or
# the failing task's trace otherwise.
#
# Usage: scripts/register_connector.sh [CONNECTOR_JSON]   (default connect/crypto-prices-jdbc-sink.json)
# Environment: CONNECT_URL (default http://127.0.0.1:$CONNECT_PORT), REGISTER_TIMEOUT seconds (120).
# Connect's REST API needs CONNECT_REST_USER (.env) and CONNECT_REST_PASSWORD (the environment, else the
# native stack's .stack/secrets.env); the password is sent in a header, never on a command line.
# Runs `python -m control register` (scripts/lib/python.sh says which Python).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/settings.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0; fi
config_file="$(realpath -m "${1:-$PROJECT_ROOT/connect/crypto-prices-jdbc-sink.json}")"
[[ -f "$config_file" ]] || { echo "ERROR: connector file $config_file not found" >&2; exit 2; }
find_python

cd "$PROJECT_ROOT"
exec "$PYTHON" -m control register --file "$config_file" --timeout "${REGISTER_TIMEOUT:-120}"
