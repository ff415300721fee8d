#!/usr/bin/env bash
# docker compose's Connect container: puts the REST API behind basic auth, then starts the worker.
# Writes the JAAS config and the credentials file (mode 0600, in CONNECT_REST_DIR, default /tmp/connect-rest)
# from CONNECT_REST_USER / CONNECT_REST_PASSWORD (or *_FILE), plus the Authorization header scripts/http_ready.sh sends,
# removes the password from the environment and execs connect-distributed.sh (CONNECT_DISTRIBUTED) with the
# given worker file. The native stack writes the same two files in stack/services.py (Connect.prepare).
set -euo pipefail
# NAME_FILE: the secret is that file's content (compose passes the stack's generated secret files so).
for var in CONNECT_REST_PASSWORD CONNECT_DB_PASSWORD KAFKA_CONNECT_PASSWORD; do
  file_var="${var}_FILE"
  [[ -n "${!file_var:-}" ]] || continue
  [[ -r "${!file_var}" ]] || { echo "ERROR: $file_var: cannot read ${!file_var}" >&2; exit 1; }
  export "$var=$(< "${!file_var}")"
  unset "$file_var"
done
: "${CONNECT_REST_USER:?CONNECT_REST_USER is not set (.env)}"
: "${CONNECT_REST_PASSWORD:?CONNECT_REST_PASSWORD (or CONNECT_REST_PASSWORD_FILE) is not set}"

umask 077
dir="${CONNECT_REST_DIR:-/tmp/connect-rest}"
mkdir -p "$dir"
# Java properties: escape backslashes, and in the user name also the separators.
user="${CONNECT_REST_USER//\\/\\\\}"
for c in '=' ':' ' ' '#' '!'; do user="${user//"$c"/\\$c}"; done
password="${CONNECT_REST_PASSWORD//\\/\\\\}"
if [[ "$password" == [[:blank:]]* ]]; then password="\\$password"; fi  # else taken for the separator's
printf '%s=%s\n' "$user" "$password" > "$dir/rest-credentials.properties"
unset password
printf 'KafkaConnect {\n  org.apache.kafka.connect.rest.basic.auth.extension.PropertyFileLoginModule required\n  file="%s";\n};\n' \
  "$dir/rest-credentials.properties" > "$dir/rest-jaas.conf"
# base64 reads the secret from stdin: it never appears on a command line.
printf 'Basic %s' "$(printf '%s:%s' "$CONNECT_REST_USER" "$CONNECT_REST_PASSWORD" | base64 | tr -d '\n')" \
  > "$dir/health-authorization"
unset CONNECT_REST_PASSWORD

export KAFKA_OPTS="-Djava.security.auth.login.config=$dir/rest-jaas.conf${KAFKA_OPTS:+ $KAFKA_OPTS}"
exec "${CONNECT_DISTRIBUTED:-/opt/kafka/bin/connect-distributed.sh}" "$@"
