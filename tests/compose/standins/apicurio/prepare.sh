#!/usr/bin/env bash
# Completes the build context of the apicurio-registry stand-in (a copy of this folder): deployments/ gets the
# registry archive the native stack runs, unpacked as the upstream image has it in /deployments, from the
# artifact cache (scripts/fetch_artifacts.sh registry, fetched if missing), with the upstream image's modes
# (user and group rwx; COPY --chown then gives it to 1001:0 without a second 170 MB layer).
# Usage: prepare.sh CONTEXT_DIR    (APICURIO_REGISTRY_VERSION, CRYPTOPIPE_CACHE: environment, else .env)
set -euo pipefail
context="${1:?usage: prepare.sh CONTEXT_DIR}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
[[ -f "$root/scripts/lib/settings.sh" ]] || root="$(git rev-parse --show-toplevel)"
# shellcheck source=scripts/lib/settings.sh
source "$root/scripts/lib/settings.sh"
load_settings "$root/.env"

home="$CRYPTOPIPE_CACHE/registry-$APICURIO_REGISTRY_VERSION"
if [[ ! -f "$home/.complete" ]]; then
  bash "$root/scripts/fetch_artifacts.sh" registry >&2
fi
# The image's run-java.sh finds quarkus-app/quarkus-run.jar or the only jar at the top: so must this layout.
if [[ ! -f "$home/quarkus-app/quarkus-run.jar" && ! -f "$home/quarkus-run.jar" ]]; then
  echo "ERROR: $home has no quarkus-run.jar where the image looks for it (top level or quarkus-app/)" >&2
  exit 1
fi
rm -rf "$context/deployments"
mkdir -p "$context/deployments"
cp -r "$home/." "$context/deployments/"
rm -f "$context/deployments/.complete"
mkdir -p "$context/deployments/data"
chmod -R ug=rwx "$context/deployments"
