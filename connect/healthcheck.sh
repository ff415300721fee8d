#!/usr/bin/env bash
# docker compose's Connect healthcheck: ready when an authenticated GET /connectors answers 200 (not GET /).
# Plain bash over /dev/tcp, so the Authorization header (written by connect/entrypoint.sh) never appears
# on a command line. CONNECT_PORT and CONNECT_REST_DIR as in connect/entrypoint.sh (8083, /tmp/connect-rest).
set -euo pipefail
exec 3<>"/dev/tcp/127.0.0.1/${CONNECT_PORT:-8083}"
printf 'GET /connectors HTTP/1.0\r\nHost: localhost\r\nAuthorization: %s\r\n\r\n' \
  "$(< "${CONNECT_REST_DIR:-/tmp/connect-rest}/health-authorization")" >&3
IFS= read -r status <&3
[[ "$status" == "HTTP/1."?" 200 "* ]]
