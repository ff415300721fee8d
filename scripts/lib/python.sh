# shellcheck shell=bash
# How every script finds Python, one rule: find_python sets PYTHON to
#   - $CRYPTOPIPE_PYTHON when it is set: an interpreter that already has the project installed. The compose
#     image sets it to its own python (producer/Dockerfile), so scripts run inside a container use that;
#     tests set it to the interpreter running them.
#   - otherwise the project's virtualenv, created once outside the clone with the pinned dependencies
#     (ensure_venv; CRYPTOPIPE_VENV names another place for it).
# Requires lib/settings.sh to be sourced first (for PROJECT_ROOT and CRYPTOPIPE_CACHE).
find_python() {
  if [[ -n "${CRYPTOPIPE_PYTHON:-}" ]]; then
    if ! "$CRYPTOPIPE_PYTHON" -c 'import confluent_kafka, psycopg, requests' 2>/dev/null; then
      echo "ERROR: CRYPTOPIPE_PYTHON=$CRYPTOPIPE_PYTHON is not a Python with the project's dependencies" \
           "(pip install -e '$PROJECT_ROOT'), or unset it to use the project's virtualenv" >&2
      return 1
    fi
    export PYTHON="$CRYPTOPIPE_PYTHON"
    return 0
  fi
  ensure_venv
}

ensure_venv() {
  local tag venv stamp
  tag="$(printf '%s' "$PROJECT_ROOT" | sha1sum | cut -c1-10)"
  venv="${CRYPTOPIPE_VENV:-$CRYPTOPIPE_CACHE/venv-$tag}"
  stamp="$venv/.installed-$(sha1sum "$PROJECT_ROOT/pyproject.toml" | cut -c1-12)"
  if [[ ! -f "$stamp" ]]; then
    echo "preparing Python environment in $venv ..."
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -e "$PROJECT_ROOT[test]"
    touch "$stamp"
  fi
  export PATH="$venv/bin:$PATH"
  export PYTHON="$venv/bin/python"
}
