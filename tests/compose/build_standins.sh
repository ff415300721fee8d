#!/usr/bin/env bash
# Builds the stand-in images (tests/compose/standins/*/) under the names of the upstream images that
# docker-compose.yml uses, with the tags from .env (the environment overrides it, as for compose):
#   postgres  -> postgres:$POSTGRES_VERSION          kafka    -> apache/kafka:$KAFKA_VERSION
#   python    -> python:$PYTHON_IMAGE_VERSION        apicurio -> quay.io/apicurio/apicurio-registry:$APICURIO_REGISTRY_VERSION
#   maven     -> maven:$MAVEN_IMAGE_VERSION          node     -> node:$NODE_IMAGE_VERSION
# A folder may name its image in a file `tag` instead (one line; ${NAME} is replaced by that setting).
# Each folder is built from a scratch copy of itself (the build context), to which are added
#   - extra-ca/: the CA certificates this machine added locally (*.crt under $STANDIN_EXTRA_CA_DIR, by default
#     /usr/local/share/ca-certificates; empty = none), for a Dockerfile that installs them (COPY extra-ca*):
#     pip, npm and Maven in the container then trust a TLS-intercepting proxy the host trusts;
#   - whatever the folder's `prepare.sh CONTEXT_DIR`, if it has one, puts there (e.g. jars).
# Each Dockerfile ARG named like a setting (ARG KAFKA_VERSION) gets that setting as its --build-arg.
# Docker's layer cache makes a rebuild of unchanged inputs quick. The base images cryptopipe/bookworm and
# cryptopipe/trixie come from `tests/compose/engine.sh install`.
# Usage: tests/compose/build_standins.sh [--list] [--no-cache] [NAME ...]   (NAME: a folder; default all)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../../scripts/lib/settings.sh"
# shellcheck disable=SC2119  # (the default settings file)
load_settings
STANDINS="$HERE/standins"
EXTRA_CA_DIR="${STANDIN_EXTRA_CA_DIR-/usr/local/share/ca-certificates}"

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# folder -> image reference, with ${NAME} placeholders expanded from the settings
# shellcheck disable=SC2016  # (expanded by expand, not here)
declare -A KNOWN=(
  [postgres]='postgres:${POSTGRES_VERSION}'
  [python]='python:${PYTHON_IMAGE_VERSION}'
  [maven]='maven:${MAVEN_IMAGE_VERSION}'
  [node]='node:${NODE_IMAGE_VERSION}'
  [kafka]='apache/kafka:${KAFKA_VERSION}'
  [apicurio]='quay.io/apicurio/apicurio-registry:${APICURIO_REGISTRY_VERSION}'
)

list_only=0
build_opts=()
names=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --list) list_only=1; shift ;;
    --no-cache) build_opts+=(--no-cache); shift ;;
    -*) echo "ERROR: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) names+=("$1"); shift ;;
  esac
done

# Replaces each ${NAME} in $1 by the setting NAME; an unset one is an error.
expand() {
  local text="$1" out="" name re='^([^$]*)[$][{]([A-Za-z_][A-Za-z0-9_]*)[}](.*)$'
  while [[ "$text" =~ $re ]]; do
    name="${BASH_REMATCH[2]}"
    [[ -n "${!name:-}" ]] || { echo "ERROR: setting $name (image name '$1') is not set" >&2; return 1; }
    out+="${BASH_REMATCH[1]}${!name}"
    text="${BASH_REMATCH[3]}"
  done
  printf '%s%s\n' "$out" "$text"
}

image_of() {
  local name="$1" template
  if [[ -f "$STANDINS/$name/tag" ]]; then
    template="$(head -n 1 "$STANDINS/$name/tag")"
  else
    template="${KNOWN[$name]:-}"
  fi
  [[ -n "$template" ]] || { echo "ERROR: no image name for stand-in '$name': add $STANDINS/$name/tag" >&2; return 1; }
  expand "$template"
}

if ((${#names[@]} == 0)); then
  for dir in "$STANDINS"/*/; do
    [[ -f "$dir/Dockerfile" ]] && names+=("$(basename "$dir")")
  done
fi
((${#names[@]})) || { echo "ERROR: no stand-in with a Dockerfile under $STANDINS" >&2; exit 1; }
for name in "${names[@]}"; do
  [[ -f "$STANDINS/$name/Dockerfile" ]] || { echo "ERROR: $STANDINS/$name/Dockerfile does not exist" >&2; exit 1; }
  image_of "$name" >/dev/null
done

if ((list_only)); then
  for name in "${names[@]}"; do printf '%-10s %s\n' "$name" "$(image_of "$name")"; done
  exit 0
fi

docker info >/dev/null 2>&1 || { echo "ERROR: no Docker engine answers (tests/compose/engine.sh start)" >&2; exit 1; }
dockerfiles=()
for name in "${names[@]}"; do dockerfiles+=("$STANDINS/$name/Dockerfile"); done
mapfile -t bases < <(sed -n 's/^FROM[[:space:]]\{1,\}\([^[:space:]]*\).*/\1/p' "${dockerfiles[@]}" | sort -u)
for base in "${bases[@]}"; do
  [[ "$base" == cryptopipe/* ]] || continue
  docker image inspect "$base" >/dev/null 2>&1 \
    || { echo "ERROR: base image $base is missing (tests/compose/engine.sh install)" >&2; exit 1; }
done

scratch=""
cleanup() { [[ -z "$scratch" ]] || rm -rf "$scratch"; }
trap cleanup EXIT

build_one() {
  local name="$1" image="$2" dir="$STANDINS/$1" context log arg args=() declared=()
  # (called in an `if`: set -e does not apply here, hence the explicit checks)
  scratch="$(mktemp -d)"
  context="$scratch/context"
  mkdir -p "$context/extra-ca" && cp -a "$dir/." "$context" || return 1
  if [[ -n "$EXTRA_CA_DIR" && -d "$EXTRA_CA_DIR" ]]; then
    find -L "$EXTRA_CA_DIR" -name '*.crt' -type f -exec cp {} "$context/extra-ca/" \; || return 1
  fi
  if [[ -f "$dir/prepare.sh" ]]; then
    bash "$dir/prepare.sh" "$context" || { echo "ERROR: $dir/prepare.sh $context failed" >&2; return 1; }
  fi
  mapfile -t declared < <(sed -n 's/^ARG[[:space:]]\{1,\}\([A-Za-z_][A-Za-z0-9_]*\).*/\1/p' "$context/Dockerfile" | sort -u)
  for arg in "${declared[@]}"; do
    [[ -n "${!arg:-}" ]] && args+=(--build-arg "$arg=${!arg}")
  done
  log="$(mktemp)"
  if ! docker build "${build_opts[@]}" "${args[@]}" --label "org.cryptopipe.standin=$name" \
      -t "$image" "$context" >"$log" 2>&1; then
    echo "ERROR: building $image from $dir failed; last lines:" >&2
    tail -n 40 "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

failed=0
for name in "${names[@]}"; do
  image="$(image_of "$name")"
  start=$SECONDS
  if build_one "$name" "$image"; then
    size="$(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%d MB", $1/1000000}')"
    printf 'stand-in %-9s %-50s built in %4ds (%s)\n' "$name" "$image" $((SECONDS - start)) "$size"
  else
    printf 'stand-in %-9s %-50s FAILED after %ds\n' "$name" "$image" $((SECONDS - start))
    failed=1
  fi
  cleanup; scratch=""
done
exit "$failed"
