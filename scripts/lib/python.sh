# shellcheck shell=bash
# Creates (once) and activates the project's virtualenv outside the clone, with the pinned dependencies.
# Requires lib/settings.sh to be sourced first (for PROJECT_ROOT and CRYPTOPIPE_CACHE).
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
