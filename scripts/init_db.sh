#!/usr/bin/env bash
# Creates the pipeline's databases, applies the pending migrations (migrations/NNNN_*.sql, in order, each in
# one transaction, recorded in schema_migrations), then init.sql (the schema: tables, functions, views, roles,
# grants). Idempotent: safe to run on every start.
#
# Two callers, one script, both on every start (it converges a half-initialised database too):
#   - the native stack (python -m stack up) runs it as the superuser on the cluster's Unix socket
#     (PGHOST/PGPORT/PGUSER set);
#   - docker compose's one-shot `db-init` runs it in the postgres image over TCP (PGHOST=postgres), once
#     the server answers there, with each password in a file named by NAME_FILE (the `secrets` volume).
# Names come from the environment (.env): POSTGRES_DB, POSTGRES_USER, CONNECT_DB_USER, POWERBI_DB_USER,
# REGISTRY_DB, REGISTRY_DB_USER, DB_OWNER_ROLE, CHART_DB_USER, READER_WATCHDOG_DB_USER,
# TICK_MAINTAINER_DB_USER. Passwords (CONNECT_DB_PASSWORD, POWERBI_DB_PASSWORD, REGISTRY_DB_PASSWORD,
# CHART_DB_PASSWORD, READER_WATCHDOG_DB_PASSWORD, TICK_MAINTAINER_DB_PASSWORD) too, never on a command line; each is needed only to create its role, and set
# only then: a password rotated since is never reset.
set -euo pipefail

# Every name comes from the caller (both pass the settings: .env + environment, core/settings.py); no default
# here, so a value is never written twice.
missing=()
for var in POSTGRES_USER POSTGRES_DB REGISTRY_DB REGISTRY_DB_USER DB_OWNER_ROLE CONNECT_DB_USER POWERBI_DB_USER \
           POWERBI_STATEMENT_TIMEOUT POWERBI_CONNECTION_LIMIT POWERBI_TEMP_FILE_LIMIT CHART_DB_USER \
           CHART_STATEMENT_TIMEOUT CHART_CONNECTION_LIMIT CHART_TEMP_FILE_LIMIT READER_WATCHDOG_DB_USER \
           TICK_MAINTAINER_DB_USER RAW_TICKS_PREMAKE_DAYS; do
  [[ -n "${!var:-}" ]] || missing+=("$var")
done
((${#missing[@]} == 0)) || { echo "ERROR: init_db.sh needs these settings in its environment: ${missing[*]}" >&2; exit 1; }
# NAME_FILE: the password is that file's content (the postgres image's convention, used by compose).
for var in POSTGRES_PASSWORD CONNECT_DB_PASSWORD POWERBI_DB_PASSWORD REGISTRY_DB_PASSWORD CHART_DB_PASSWORD \
           READER_WATCHDOG_DB_PASSWORD TICK_MAINTAINER_DB_PASSWORD; do
  file_var="${var}_FILE"
  [[ -n "${!file_var:-}" ]] || continue
  [[ -z "${!var:-}" ]] || { echo "ERROR: both $var and $file_var are set: set one" >&2; exit 1; }
  [[ -r "${!file_var}" ]] || { echo "ERROR: $file_var: cannot read ${!file_var}" >&2; exit 1; }
  export "$var=$(< "${!file_var}")"
done
# Over TCP the superuser signs in with its password (libpq reads PGPASSWORD from the environment).
if [[ -n "${POSTGRES_PASSWORD:-}" && -z "${PGPASSWORD:-}" ]]; then export PGPASSWORD="$POSTGRES_PASSWORD"; fi
INIT_SQL="${INIT_SQL:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/init.sql}"
[[ -r "$INIT_SQL" ]] || { echo "ERROR: init.sql not found at $INIT_SQL (set INIT_SQL)" >&2; exit 1; }
MIGRATIONS_DIR="$(dirname "$INIT_SQL")/migrations"
[[ -d "$MIGRATIONS_DIR" ]] || { echo "ERROR: no migrations/ beside $INIT_SQL" >&2; exit 1; }

psql_admin() {  # notices (IF EXISTS ... skipping) are noise on every start
  PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" \
  psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" "$@"
}

echo "init_db: databases ${POSTGRES_DB} and ${REGISTRY_DB}"
# CREATE DATABASE cannot run inside a DO block: \gexec runs it only when the database is missing.
# The password reaches psql through its environment (\getenv), not its arguments (visible in ps).
psql_admin --dbname postgres -v db="$POSTGRES_DB" -v registry_db="$REGISTRY_DB" -v registry_user="$REGISTRY_DB_USER" <<'SQL'
\getenv registry_password REGISTRY_DB_PASSWORD
\if :{?registry_password} \else \set registry_password '' \endif
SET pg_stat_statements.track_utility = off;
SELECT format('DO $e$ BEGIN RAISE EXCEPTION %L; END $e$',
              format('role %s does not exist and REGISTRY_DB_PASSWORD is not set: it is needed to create the role',
                     :'registry_user'))
 WHERE :'registry_password' = '' AND NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'registry_user') \gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'registry_user', :'registry_password')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'registry_user') \gexec
-- The pipeline's database was called `crypto` before it took the name Power BI users are told
-- (crypto_streaming): an existing one is renamed, once, when nobody is connected to it.
SELECT format('DO $e$ BEGIN RAISE EXCEPTION %L; END $e$',
              format('database crypto must be renamed to %s but has %s session(s): stop the stack (down), then up',
                     :'db', (SELECT count(*) FROM pg_stat_activity WHERE datname = 'crypto')))
 WHERE :'db' = 'crypto_streaming' AND EXISTS (SELECT FROM pg_database WHERE datname = 'crypto')
   AND NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')
   AND EXISTS (SELECT FROM pg_stat_activity WHERE datname = 'crypto') \gexec
SELECT format('ALTER DATABASE crypto RENAME TO %I', :'db')
 WHERE :'db' = 'crypto_streaming' AND EXISTS (SELECT FROM pg_database WHERE datname = 'crypto')
   AND NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('CREATE DATABASE %I', :'db')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'registry_db', :'registry_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'registry_db') \gexec
-- Nobody connects where they need not: the registry's database is its owner's (and the superuser's);
-- postgres and template1 are the superuser's. init.sql does the same for the pipeline's database.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', d)
  FROM unnest(ARRAY[:'registry_db', 'postgres', 'template1']) AS d \gexec
SQL

psql_admin --dbname "$POSTGRES_DB" -c \
  "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
applied="$(psql_admin --dbname "$POSTGRES_DB" --tuples-only --no-align -c 'SELECT version FROM schema_migrations')"
for migration in "$MIGRATIONS_DIR"/*.sql; do
  version="$(basename "$migration" .sql)"
  [[ "$version" =~ ^[0-9]{4}_[a-z0-9_]+$ ]] || { echo "ERROR: $migration: name must be NNNN_lowercase_words.sql" >&2; exit 1; }
  grep -qxF "$version" <<<"$applied" && continue
  echo "init_db: migration $version"
  psql_admin --dbname "$POSTGRES_DB" --single-transaction -f "$migration" \
    -c "INSERT INTO schema_migrations (version) VALUES ('$version')"
done

echo "init_db: applying $(basename "$INIT_SQL") to ${POSTGRES_DB}"
psql_admin --dbname "$POSTGRES_DB" -f "$INIT_SQL"
echo "init_db: done"
