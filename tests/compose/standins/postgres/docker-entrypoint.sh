#!/usr/bin/env bash
# Entrypoint of the postgres:15 stand-in (CONTRACT.md). Written for this project from the official image's
# documented behaviour, not copied from it:
#   - `postgres ...` (or a first argument starting with "-") runs the server as the postgres user;
#   - on an EMPTY data directory ($PGDATA without PG_VERSION) it first runs initdb (superuser
#     POSTGRES_USER with POSTGRES_PASSWORD), adds `host all all all <auth>` to pg_hba.conf, starts a
#     temporary server on the Unix socket only, creates POSTGRES_DB, runs /docker-entrypoint-initdb.d/*,
#     and stops that server; a data directory that holds a cluster is left as it is;
#   - anything else (bash, psql, postgres --version ...) is executed unchanged.
# Sourcing this file defines the functions without running anything (init scripts may call
# docker_process_sql, as with the official image).
set -Eeo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
INITDB_DIR=/docker-entrypoint-initdb.d
SOCKET_DIR=/var/run/postgresql

say() { printf '%s: %s\n' "${0##*/}" "$*"; }
fail() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# NAME takes its value from NAME, or else from the file named by NAME_FILE (Docker secrets), or else DEFAULT.
# Setting both is an error. NAME_FILE is unset afterwards.
env_or_file() {
  local name="$1" default="${2-}" file_var="$1_FILE"
  local value="${!name-}" file="${!file_var-}"
  [[ -n "$value" && -n "$file" ]] && fail "$name and $file_var are both set; set one of them"
  if [[ -z "$value" && -n "$file" ]]; then
    value="$(<"$file")" || fail "cannot read $file_var ($file)"
  fi
  export "$name=${value:-$default}"
  unset "$file_var"
}

load_env() {
  env_or_file POSTGRES_PASSWORD
  env_or_file POSTGRES_USER postgres
  env_or_file POSTGRES_DB "$POSTGRES_USER"
  env_or_file POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=}"
}

cluster_exists() { [[ -s "$PGDATA/PG_VERSION" ]]; }

# Directories the server writes; when running as root, hand them to the postgres user.
prepare_dirs() {
  mkdir -p "$PGDATA" "$SOCKET_DIR" || :
  chmod 700 "$PGDATA" 2>/dev/null || :
  chmod 3775 "$SOCKET_DIR" 2>/dev/null || :
  if [[ -n "${POSTGRES_INITDB_WALDIR:-}" ]]; then
    mkdir -p "$POSTGRES_INITDB_WALDIR"
    chmod 700 "$POSTGRES_INITDB_WALDIR" 2>/dev/null || :
  fi
  if [[ "$(id -u)" == 0 ]]; then
    local dir
    for dir in "$PGDATA" "$SOCKET_DIR" ${POSTGRES_INITDB_WALDIR:+"$POSTGRES_INITDB_WALDIR"}; do
      find "$dir" ! -user postgres -exec chown postgres: {} +
    done
  fi
}

check_password_or_trust() {
  if [[ -z "$POSTGRES_PASSWORD" && "$POSTGRES_HOST_AUTH_METHOD" != trust ]]; then
    cat >&2 <<'EOF'
Error: the data directory is empty and no superuser password is given.
       Set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) to a non-empty value, e.g.
       "-e POSTGRES_PASSWORD=..." on docker run; POSTGRES_HOST_AUTH_METHOD=trust (no password
       at all, not recommended) is the only alternative.
EOF
    exit 1
  fi
  [[ "$POSTGRES_HOST_AUTH_METHOD" == trust ]] \
    && say "WARNING: POSTGRES_HOST_AUTH_METHOD=trust: any host that reaches port 5432 gets in without a password" >&2
  return 0
}

# initdb needs its uid in the passwd database: a --user uid that is not there gets a fake entry (nss_wrapper).
fake_passwd_entry() {
  getent passwd "$(id -u)" >/dev/null && return 0
  local lib
  for lib in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so; do
    [[ -s "$lib" ]] || continue
    NSS_WRAPPER_PASSWD="$(mktemp)"
    NSS_WRAPPER_GROUP="$(mktemp)"
    printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$(id -u)" "$(id -g)" "$PGDATA" > "$NSS_WRAPPER_PASSWD"
    printf 'postgres:x:%s:\n' "$(id -g)" > "$NSS_WRAPPER_GROUP"
    export LD_PRELOAD="$lib" NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
    return 0
  done
}

drop_fake_passwd_entry() {
  [[ "${LD_PRELOAD:-}" == */libnss_wrapper.so ]] || return 0
  rm -f "$NSS_WRAPPER_PASSWD" "$NSS_WRAPPER_GROUP"
  unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
}

run_initdb() {
  local extra=()
  # POSTGRES_INITDB_ARGS is shell words ("--data-checksums --locale=C"), quoting allowed.
  [[ -n "$POSTGRES_INITDB_ARGS" ]] && eval "extra=( $POSTGRES_INITDB_ARGS )"
  [[ -n "${POSTGRES_INITDB_WALDIR:-}" ]] && extra=(--waldir "$POSTGRES_INITDB_WALDIR" "${extra[@]}")
  fake_passwd_entry
  # The password goes through a pipe, never a command line; the newline keeps an empty one valid for --pwfile.
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") "${extra[@]}"
  drop_fake_passwd_entry
}

# Host connections: POSTGRES_HOST_AUTH_METHOD, by default the server's password_encryption (scram-sha-256).
add_host_rule() {
  local method="$POSTGRES_HOST_AUTH_METHOD"
  [[ -n "$method" ]] || method="$(postgres -C password_encryption "$@")"
  {
    echo
    [[ "$method" == trust ]] && echo '# POSTGRES_HOST_AUTH_METHOD=trust: no password asked of any host'
    echo "host all all all $method"
  } >> "$PGDATA/pg_hba.conf"
}

# The temporary server for initialisation: the server's own arguments, but no TCP listener at all.
temp_server_start() {
  local opts="-c listen_addresses='' -p ${PGPORT:-5432}"
  # pg_ctl hands -o to a shell: each argument quoted (printf with no argument would yield one empty word)
  (($#)) && opts="$(printf '%q ' "$@")$opts"
  NOTIFY_SOCKET='' pg_ctl -D "$PGDATA" -o "$opts" -w start
}

temp_server_stop() { pg_ctl -D "$PGDATA" -m fast -w stop; }

# psql on the local socket as the superuser, into POSTGRES_DB unless told otherwise (--dbname ...).
docker_process_sql() {
  local cmd=(psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER")
  [[ -n "$POSTGRES_DB" ]] && cmd+=(--dbname "$POSTGRES_DB")
  PGHOST='' PGHOSTADDR='' "${cmd[@]}" "$@"
}

create_db() {
  local found
  # (psql takes the last --dbname: postgres, not POSTGRES_DB, which may not exist yet)
  found="$(docker_process_sql --dbname postgres --tuples-only --no-align -v db="$POSTGRES_DB" \
    <<<"SELECT 1 FROM pg_database WHERE datname = :'db'")"
  [[ -n "$found" ]] && return 0
  docker_process_sql --dbname postgres -v db="$POSTGRES_DB" <<<'CREATE DATABASE :"db"'
}

# *.sh: executed when executable, otherwise sourced (in this shell); *.sql, *.sql.gz/.xz/.zst: through psql.
run_init_files() {
  local f
  # older init scripts written for the official image run "${psql[@]}"
  # shellcheck disable=SC2034
  psql=(docker_process_sql)
  for f in "$@"; do
    [[ -e "$f" ]] || continue
    case "$f" in
      *.sh)
        # shellcheck source=/dev/null
        if [[ -x "$f" ]]; then say "running $f"; "$f"; else say "sourcing $f"; . "$f"; fi ;;
      *.sql) say "running $f"; docker_process_sql -f "$f" ;;
      *.sql.gz) say "running $f"; gzip -dc "$f" | docker_process_sql ;;
      *.sql.xz) say "running $f"; xz -dc "$f" | docker_process_sql ;;
      *.sql.zst) say "running $f"; zstd -dc "$f" | docker_process_sql ;;
      *) say "ignoring $f" ;;
    esac
  done
}

# Options after which postgres prints something and exits: no initialisation for those.
informational() {
  local a
  for a in "$@"; do
    case "$a" in -'?'|--help|--describe-config|-V|--version) return 0 ;; esac
  done
  return 1
}

main() {
  [[ "${1:0:1}" == - ]] && set -- postgres "$@"
  if [[ "$1" != postgres ]] || informational "$@"; then
    exec "$@"
  fi

  load_env
  prepare_dirs
  if [[ "$(id -u)" == 0 ]]; then
    # The same script again, as postgres (PostgreSQL refuses to run as root).
    exec gosu postgres "${BASH_SOURCE[0]}" "$@"
  fi

  if cluster_exists; then
    say "$PGDATA holds a cluster: skipping initialisation"
  else
    check_password_or_trust
    ls "$INITDB_DIR/" >/dev/null  # an unreadable init folder fails here, before initdb
    run_initdb
    add_host_rule "${@:2}"
    # For psql, should POSTGRES_INITDB_ARGS ask passwords of local connections too (--auth-local=...).
    export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
    temp_server_start "${@:2}"
    create_db
    run_init_files "$INITDB_DIR"/*
    temp_server_stop
    unset PGPASSWORD
    say "initialisation done; starting the server"
  fi
  exec "$@"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
