# shellcheck shell=bash
# Loads the project's one settings file (.env at the repository root) into the environment.
# Values already set in the environment win, exactly as docker compose treats .env.
PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PROJECT_ROOT

load_settings() {
  local file="${1:-$PROJECT_ROOT/.env}" key value
  [[ -f "$file" ]] || { echo "ERROR: settings file $file not found" >&2; return 1; }
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ "$line" =~ ^([A-Z_][A-Z0-9_]*)=(.*)$ ]] || continue
    key="${BASH_REMATCH[1]}"
    value="${BASH_REMATCH[2]}"
    if [[ -z "${!key+x}" ]]; then
      export "$key=$value"
    fi
  done < "$file"
}

# Where downloaded artifacts live: outside the clone so that reruns and fresh clones reuse them.
export CRYPTOPIPE_CACHE="${CRYPTOPIPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cryptopipe}"
