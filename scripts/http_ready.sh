#!/usr/bin/env bash
# Container healthcheck: exits 0 when GET http://127.0.0.1:PORT/PATH answers 200, with bash alone (no curl,
# which not every image has). AUTH_FILE, when given, holds the Authorization header's value (Connect's REST
# API: connect/entrypoint.sh writes it): it never appears on a command line.
# Usage: http_ready.sh PORT PATH [AUTH_FILE]
set -euo pipefail
port="${1:?usage: http_ready.sh PORT PATH [AUTH_FILE]}"
path="${2:?usage: http_ready.sh PORT PATH [AUTH_FILE]}"
auth=""
if [[ -n "${3:-}" ]]; then auth="Authorization: $(< "$3")"$'\r\n'; fi
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n%s\r\n' "$path" "$auth" >&3
IFS= read -r -t 10 status <&3
[[ "$status" == "HTTP/1."?" 200 "* ]]
