#!/usr/bin/env bash
# Build the cluster node image (a container that runs its own dockerd), rebuilding only what changed.
#
# Usage: images/node/build.sh [--force]     prints the node image tag on stdout
#
# Two layers, each tagged by the hash of its inputs (like the runner image):
#   dad-sandbox-node-rootfs:<hash>  Debian minbase + docker.io + iproute2, made by the same
#                                   images/base/build-debootstrap.sh as the base image (offline
#                                   from the Debian mirror apt uses here; ~70-100 s the first time);
#   dad-sandbox-node:<hash>         + images/node/entrypoint.sh (a `docker build` with no network, ~1 s).
# Also writes build/node-tag so scripts/cluster.sh uses exactly this image.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
force=false
[ "${1:-}" = "--force" ] && force=true

log() { printf 'node-image: %s\n' "$*" >&2; }
die() { printf 'node-image: error: %s\n' "$*" >&2; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker engine answers; run 'make engine' first"
[ "$(id -u)" = 0 ] || die "the node image is made with debootstrap, which needs root"

suite=${DAD_BASE_SUITE:-bookworm}
# python3 is there because build-debootstrap.sh checks the standard library (and it helps debugging);
# docker.io brings containerd, runc and docker-init; iproute2 deletes and checks the default route.
packages=python3,ca-certificates,docker.io,iproute2,procps
rootfs_hash=$( { cat "$root/images/base/build-debootstrap.sh"; echo "$suite $packages"; } | sha256sum | cut -c1-12)
rootfs_tag=dad-sandbox-node-rootfs:$rootfs_hash
if $force || ! docker image inspect "$rootfs_tag" >/dev/null 2>&1; then
  log "building $rootfs_tag (debootstrap $suite + docker.io)"
  DAD_BASE_SUITE=$suite DAD_BASE_PACKAGES=$packages bash "$root/images/base/build-debootstrap.sh" "$rootfs_tag"
fi

node_hash=$( { docker image inspect --format '{{.Id}}' "$rootfs_tag"; cat "$here/Dockerfile" "$here/entrypoint.sh"; } | sha256sum | cut -c1-12)
node_tag=dad-sandbox-node:$node_hash
if $force || ! docker image inspect "$node_tag" >/dev/null 2>&1; then
  ctx=$(mktemp -d /var/tmp/dad-node-image.XXXXXX)
  trap 'rm -rf "$ctx"' EXIT
  cp "$here/Dockerfile" "$here/entrypoint.sh" "$ctx/"
  DOCKER_BUILDKIT=0 docker build -q --force-rm --build-arg "ROOTFS=$rootfs_tag" -t "$node_tag" \
    --label "dad.inputs=$node_hash" "$ctx" >/dev/null 2>"$ctx/build.err" \
    || { cat "$ctx/build.err" >&2; die "docker build of the node image failed"; }
  log "built $node_tag"
else
  log "node image $node_tag is up to date"
fi
mkdir -p "$root/build"
echo "$node_tag" > "$root/build/node-tag"
echo "$node_tag"
