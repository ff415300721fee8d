#!/usr/bin/env bash
# Registers (creates or updates, idempotently) the JDBC sink connector with Kafka Connect and waits
# until the connector and every task are RUNNING. Exits non-zero with Connect's validation errors or
# the failing task's trace otherwise.
#
# Usage: scripts/register_connector.sh [CONNECTOR_JSON]   (default connect/crypto-prices-jdbc-sink.json)
# Environment: CONNECT_URL (default http://127.0.0.1:$CONNECT_PORT), REGISTER_TIMEOUT seconds (120).
# Connect's REST API needs CONNECT_REST_USER (.env) and CONNECT_REST_PASSWORD (the environment, else the
# native stack's .stack/secrets.env); the password is sent in a header, never on a command line.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/settings.sh"
load_settings

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0; fi
config_file="${1:-$PROJECT_ROOT/connect/crypto-prices-jdbc-sink.json}"
[[ -f "$config_file" ]] || { echo "ERROR: connector file $config_file not found" >&2; exit 2; }
export CONNECT_URL="${CONNECT_URL:-http://127.0.0.1:$CONNECT_PORT}"

cd "$PROJECT_ROOT"
"${PYTHON:-python3}" -m stack register --file "$config_file" --timeout "${REGISTER_TIMEOUT:-120}"
