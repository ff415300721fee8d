#!/usr/bin/env bash
# Checks the postgres stand-in against the contract in CONTRACT.md, with throwaway containers:
# first start (initdb, password, POSTGRES_DB, init scripts of every kind, a temporary server that listens
# on no TCP port), host connections by password from another container, a restart that skips the
# initialisation, *_FILE secrets, the refusals, and a stop by SIGINT.
# Usage: tests/compose/standins/postgres/check.sh [IMAGE]   (default postgres:$POSTGRES_VERSION from .env)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../../../scripts/lib/settings.sh"
# shellcheck disable=SC2119
load_settings
image="${1:-postgres:$POSTGRES_VERSION}"
work="$(mktemp -d)"
names=()
cleanup() { ((${#names[@]})) && docker rm -f "${names[@]}" >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT
passed=0 failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
check() { local what="$1"; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi; }
refused() { ! "$@"; }
ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
wait_ready() {
  for _ in $(seq 60); do
    docker exec "$1" pg_isready -q -h 127.0.0.1 -U "${2:-postgres}" 2>/dev/null && return 0
    sleep 1
  done
  docker logs "$1" 2>&1 | tail -n 30
  bad "$1 became ready"
  echo "$passed passed, $failed failed"
  exit 1
}
# psql from a second container, over the network (pg_hba's `host all all all` rule, not the loopback trust)
remote_sql() {
  local container="$1" password="$2"; shift 2
  docker run --rm -e PGPASSWORD="$password" "$image" psql -h "$(ip_of "$container")" -X -At "$@"
}

mkdir -p "$work/init"
cat > "$work/init/01-socket-only.sh" <<'EOF'
#!/bin/bash
# executable, so executed; the temporary server must not listen on TCP
if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then echo "TCP 5432 is open during init"; exit 1; fi
[[ "$(psql -X -At -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c 'SHOW listen_addresses')" == "" ]] || exit 1
psql -X -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c 'CREATE TABLE init_socket_only_ok ()'
EOF
chmod +x "$work/init/01-socket-only.sh"
cat > "$work/init/02-sourced.sh" <<'EOF'
# not executable, so sourced: the entrypoint's functions are at hand
docker_process_sql <<<'CREATE TABLE init_sourced_ok ()'
"${psql[@]}" <<<'CREATE TABLE init_sourced_psql_array_ok ()'
EOF
echo 'CREATE TABLE init_sql_ok ();' > "$work/init/03.sql"
echo 'CREATE TABLE init_sql_gz_ok ();' | gzip > "$work/init/04.sql.gz"
echo 'not run' > "$work/init/05.txt"
chmod -R a+rX "$work"

names+=(standin-pg-check)
docker run -d --name standin-pg-check -e POSTGRES_PASSWORD=pw1 -e POSTGRES_DB=appdb \
  -v "$work/init:/docker-entrypoint-initdb.d:ro" "$image" >/dev/null
wait_ready standin-pg-check
tables="$(docker exec standin-pg-check psql -X -At -U postgres -d appdb \
  -c "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE tablename LIKE 'init_%'")"
check "first start: init scripts ran in order (.sh executed/sourced, .sql, .sql.gz) into POSTGRES_DB" \
  test "$tables" = "init_socket_only_ok,init_sourced_ok,init_sourced_psql_array_ok,init_sql_gz_ok,init_sql_ok"
check "temporary init server: no TCP listener, listen_addresses=''" \
  docker exec standin-pg-check psql -X -At -U postgres -d appdb -c 'SELECT 1 FROM init_socket_only_ok'
check "other files in the init folder are ignored" bash -c "docker logs standin-pg-check 2>&1 | grep -q 'ignoring /docker-entrypoint-initdb.d/05.txt'"
check "server listens on all addresses" test "$(docker exec standin-pg-check psql -X -At -U postgres -c 'SHOW listen_addresses')" = '*'
check "pg_hba: host all all all scram-sha-256" bash -c "docker exec standin-pg-check tail -n 1 /var/lib/postgresql/data/pg_hba.conf | grep -qx 'host all all all scram-sha-256'"
check "host connection with the password (from another container)" remote_sql standin-pg-check pw1 -U postgres -d appdb -c 'SELECT 1'
check "host connection with a wrong password is refused" refused remote_sql standin-pg-check wrong -U postgres -c 'SELECT 1'
check "psql -h 127.0.0.1 inside the container" docker exec -e PGPASSWORD=pw1 standin-pg-check psql -h 127.0.0.1 -U postgres -c 'SELECT 1'
check "server runs as postgres, locale en_US.utf8" \
  test "$(docker exec standin-pg-check psql -X -At -U postgres -c "SELECT current_setting('lc_collate') || ' ' || pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'postgres'")" = "en_US.utf8 postgres"
start=$SECONDS
docker stop standin-pg-check >/dev/null
check "docker stop (SIGINT) ends it in under 5 s" test $((SECONDS - start)) -lt 5
check "... with a clean shutdown" bash -c "docker logs standin-pg-check 2>&1 | tail -n 1 | grep -q 'database system is shut down'"
docker start standin-pg-check >/dev/null
wait_ready standin-pg-check
check "restart with a cluster: initialisation skipped" bash -c "docker logs standin-pg-check 2>&1 | grep -q 'holds a cluster: skipping initialisation'"
check "restart: the init scripts did not run again" \
  test "$(docker logs standin-pg-check 2>&1 | grep -c 'running /docker-entrypoint-initdb.d/03.sql')" = 1

printf 'pw-from-file\n' > "$work/pw"; chmod a+r "$work/pw"
names+=(standin-pg-check-file)
docker run -d --name standin-pg-check-file -v "$work/pw:/run/secrets/pw:ro" -e POSTGRES_PASSWORD_FILE=/run/secrets/pw \
  -e POSTGRES_USER=boss -e POSTGRES_INITDB_ARGS="--data-checksums --lc-messages='C'" \
  "$image" postgres -c shared_preload_libraries=pg_stat_statements >/dev/null
wait_ready standin-pg-check-file boss
check "POSTGRES_PASSWORD_FILE, POSTGRES_USER, POSTGRES_DB defaulting to the user, server arguments, POSTGRES_INITDB_ARGS" \
  test "$(remote_sql standin-pg-check-file pw-from-file -U boss -d boss -c "SELECT current_setting('shared_preload_libraries') || ' ' || current_setting('data_checksums') || ' ' || current_setting('lc_messages')")" \
  = "pg_stat_statements on C"

check "no password on an empty data dir: refused" bash -c "docker run --rm '$image' 2>&1 | grep -q 'no superuser password'"
check "POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE both set: refused" \
  refused docker run --rm -e POSTGRES_PASSWORD=a -e POSTGRES_PASSWORD_FILE=/etc/hostname "$image"
check "other commands run as given" test "$(docker run --rm "$image" bash -c 'id -un')" = root

echo "$passed passed, $failed failed"
((failed == 0))
