# shellcheck shell=bash
# Loads the project's one settings file (.env at the repository root) into the environment, through the one
# parser and declaration (core/settings.py: `python3 -m core settings --shell`, standard library only, so the
# machine's python3 runs it before the project's virtualenv exists). A line it cannot parse, an undeclared key
# or a value of the wrong type stops the script with one error listing them all, file and line each.
# Values already set in the environment win, exactly as docker compose treats .env. In compose's one-shots whose
# images have no python3 (maven, node), compose itself has read .env into the environment (`env_file: .env`) and
# CRYPTOPIPE_SETTINGS_LOADED=compose says so: load_settings then reads nothing.
PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PROJECT_ROOT

load_settings() {
  local file="${1:-${CRYPTOPIPE_ENV_FILE:-$PROJECT_ROOT/.env}}" exports
  [[ "${CRYPTOPIPE_SETTINGS_LOADED:-}" != compose ]] || return 0
  [[ -f "$file" ]] || { echo "ERROR: settings file $file not found" >&2; return 1; }
  exports="$(PYTHONPATH="$PROJECT_ROOT${PYTHONPATH:+:$PYTHONPATH}" python3 -m core settings --shell --file "$file")" \
    || return 1
  eval "$exports"
}

# Where downloaded artifacts live: outside the clone so that reruns and fresh clones reuse them.
export CRYPTOPIPE_CACHE="${CRYPTOPIPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cryptopipe}"
