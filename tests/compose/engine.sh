#!/usr/bin/env bash
# A real Docker engine for the compose end-to-end test, on a machine that reaches Debian's apt and the Go
# module proxy but no image registry (CI; see ../../../shared/STACK.md, last section):
#   install  - Debian's docker.io (dockerd 20.10) + debootstrap, Compose v2 built from the Go module proxy
#              (cached in ~/.cache/cryptopipe/compose), base images `cryptopipe/bookworm` and `cryptopipe/trixie`
#              (Java 21 for the registry) from debootstrap, cached as tarballs
#   start    - dockerd with its own data root; remembers ip_forward and the FORWARD policy it changes
#   stop     - stops dockerd and restores what it changed (ip_forward, FORWARD policy, its chains, docker0)
# Idempotent: each step skips what is already there. Needs root.
set -euo pipefail

COMPOSE_VERSION="${COMPOSE_VERSION:-v2.40.3}"
CACHE="${CRYPTOPIPE_CACHE:-$HOME/.cache/cryptopipe}"
ENGINE_STATE="${DOCKER_ENGINE_STATE:-/var/lib/cryptopipe-docker}"
PLUGIN="$HOME/.docker/cli-plugins/docker-compose"

log() { echo "engine: $*" >&2; }
die() { echo "engine: error: $*" >&2; exit 1; }

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

install_packages() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v iptables >/dev/null || need+=(iptables)
  if ((${#need[@]})); then
    log "apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

install_compose() {
  local built="$CACHE/compose/docker-compose-$COMPOSE_VERSION"
  if [[ ! -x "$built" ]]; then
    command -v go >/dev/null || die "Go is needed to build Compose $COMPOSE_VERSION"
    log "building Compose $COMPOSE_VERSION from the Go module proxy (a few minutes, once)"
    local dir src
    dir="$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    src="$(mktemp -d)"
    cp -r "$dir/." "$src"
    chmod -R u+w "$src"
    mkdir -p "$CACHE/compose"
    (cd "$src" && CGO_ENABLED=0 go build -trimpath \
      -ldflags "-X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" -o "$built.tmp" ./cmd)
    mv "$built.tmp" "$built"
    rm -rf "$src"
  fi
  mkdir -p "$(dirname "$PLUGIN")"
  install -m 0755 "$built" "$PLUGIN"
  docker compose version >&2
}

install_base_image() {
  local suite="$1" image="cryptopipe/$1"
  docker image inspect "$image" >/dev/null 2>&1 && return 0
  local tarball="$CACHE/images/$suite-minbase.tar"
  if [[ ! -s "$tarball" ]]; then
    local mirror rootfs
    mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    rootfs="$(mktemp -d)"
    log "debootstrap $suite from $mirror (about a minute, once)"
    debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/dev/null
    # The host's apt sources (its mirror), with the suite names of this rootfs.
    sed -e "s/\bbookworm\b/$suite/g" /etc/apt/sources.list.d/debian.sources > "$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -f "$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    mkdir -p "$CACHE/images"
    tar -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  log "importing $image"
  docker import "$tarball" "$image" >/dev/null
}

engine_running() { docker info >/dev/null 2>&1; }

start_engine() {
  engine_running && { log "dockerd already answers"; return 0; }
  mkdir -p "$ENGINE_STATE"
  sysctl -n net.ipv4.ip_forward > "$ENGINE_STATE/ip_forward.before"
  iptables -S FORWARD 2>/dev/null | sed -n 's/^-P FORWARD //p' > "$ENGINE_STATE/forward_policy.before" || true
  log "starting dockerd (data root $ENGINE_STATE/data, log $ENGINE_STATE/dockerd.log)"
  nohup dockerd --data-root "$ENGINE_STATE/data" --storage-driver=overlay2 \
    --pidfile "$ENGINE_STATE/dockerd.pid" > "$ENGINE_STATE/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    engine_running && return 0
    sleep 0.5
  done
  tail -20 "$ENGINE_STATE/dockerd.log" >&2
  die "dockerd did not answer within 30 s"
}

stop_engine() {
  local pid
  pid="$(cat "$ENGINE_STATE/dockerd.pid" 2>/dev/null || true)"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    log "stopping dockerd (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  pkill -x containerd 2>/dev/null || true
  if [[ -s "$ENGINE_STATE/ip_forward.before" ]]; then
    sysctl -qw "net.ipv4.ip_forward=$(cat "$ENGINE_STATE/ip_forward.before")"
  fi
  if [[ -s "$ENGINE_STATE/forward_policy.before" ]]; then
    iptables -P FORWARD "$(cat "$ENGINE_STATE/forward_policy.before")"
  fi
  # dockerd leaves its chains, NAT rules and bridge behind: remove them.
  for chain in DOCKER-USER DOCKER-ISOLATION-STAGE-1 DOCKER-ISOLATION-STAGE-2 DOCKER; do
    iptables -F "$chain" 2>/dev/null || true
  done
  iptables -S FORWARD 2>/dev/null | grep -E 'DOCKER|docker0|br-' | sed 's/^-A/-D/' | while read -r rule; do
    eval "iptables $rule" 2>/dev/null || true
  done
  for chain in DOCKER-USER DOCKER-ISOLATION-STAGE-1 DOCKER-ISOLATION-STAGE-2 DOCKER; do
    iptables -X "$chain" 2>/dev/null || true
  done
  iptables -t nat -S 2>/dev/null | grep -E 'DOCKER|docker0|br-|172\.' | grep '^-A' | sed 's/^-A/-D/' | while read -r rule; do
    eval "iptables -t nat $rule" 2>/dev/null || true
  done
  iptables -t nat -F DOCKER 2>/dev/null || true
  iptables -t nat -X DOCKER 2>/dev/null || true
  ip link show docker0 >/dev/null 2>&1 && ip link delete docker0 || true
  for br in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | grep '^br-' || true); do
    ip link delete "$br" || true
  done
  log "engine stopped, host network settings restored"
}

case "${1:-}" in
  install) install_packages; install_compose; start_engine; install_base_image bookworm; install_base_image trixie ;;
  start) start_engine ;;
  stop) stop_engine ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
