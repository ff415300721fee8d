#!/usr/bin/env bash
# Creates the pipeline's databases and applies init.sql. Idempotent: safe to run on every start.
#
# Two callers, one script:
#   - the native stack (python -m stack up) runs it with PGHOST/PGPORT/PGUSER/PGPASSWORD set;
#   - the postgres container runs it from /docker-entrypoint-initdb.d on first start (local socket).
# Names and passwords come from the environment (.env defaults): POSTGRES_DB, POSTGRES_USER,
# CONNECT_DB_USER/PASSWORD, POWERBI_DB_USER/PASSWORD, REGISTRY_DB/REGISTRY_DB_USER/PASSWORD.
set -euo pipefail

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=crypto}"
: "${REGISTRY_DB:=registry}"
: "${REGISTRY_DB_USER:=registry}"
: "${REGISTRY_DB_PASSWORD:=registry}"
INIT_SQL="${INIT_SQL:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/init.sql}"
[[ -r "$INIT_SQL" ]] || { echo "ERROR: init.sql not found at $INIT_SQL (set INIT_SQL)" >&2; exit 1; }

psql_admin() {
  psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" "$@"
}

echo "init_db: databases ${POSTGRES_DB} and ${REGISTRY_DB}"
# CREATE DATABASE cannot run inside a DO block: \gexec runs it only when the database is missing.
psql_admin --dbname postgres \
  -v db="$POSTGRES_DB" -v registry_db="$REGISTRY_DB" \
  -v registry_user="$REGISTRY_DB_USER" -v registry_password="$REGISTRY_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'registry_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'registry_user') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'registry_user', :'registry_password') \gexec
SELECT format('CREATE DATABASE %I', :'db')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'registry_db', :'registry_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'registry_db') \gexec
SQL

echo "init_db: applying $(basename "$INIT_SQL") to ${POSTGRES_DB}"
psql_admin --dbname "$POSTGRES_DB" -f "$INIT_SQL"
echo "init_db: done"
