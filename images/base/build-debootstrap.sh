#!/usr/bin/env bash
# Build the base image with no registry: debootstrap a minimal Debian with CPython 3 and its full
# standard library, then `docker import` the root filesystem.
#
# Usage: build-debootstrap.sh TAG
# Why Debian's python3 (not python3-minimal): modules such as `resource` and `venv` live in
# libpython3.x-stdlib, and agent code expects a whole standard library.
# The mirror is read from this machine's apt sources, so whatever mirror apt uses here is used.
set -euo pipefail
tag=${1:?usage: build-debootstrap.sh TAG}
suite=${DAD_BASE_SUITE:-bookworm}
packages=${DAD_BASE_PACKAGES:-python3,python3-venv,ca-certificates,tini}

log() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "debootstrap needs root; on a machine with a registry set DAD_BASE_FROM=python:3.11-slim instead"

mirror=${DAD_BASE_MIRROR:-}
if [ -z "$mirror" ]; then
  # First 'URIs:' (deb822) or 'deb URL' line that serves the plain Debian archive.
  mirror=$(grep -hsE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  [ -n "$mirror" ] || mirror=$(grep -hsE '^\s*deb\s' /etc/apt/sources.list 2>/dev/null \
             | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
fi
[ -n "$mirror" ] || die "no Debian mirror found in apt sources; set DAD_BASE_MIRROR"

if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq debootstrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
fi

work=$(mktemp -d /var/tmp/dad-rootfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
log "debootstrap $suite (minbase + $packages); this takes a few minutes the first time"
debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

# Trim what a container never needs; keep the standard library whole.
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* \
       "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/* "$work"/rootfs/usr/share/locale/*
"$work/rootfs/usr/bin/python3" -c 'import resource, venv, ssl, sqlite3, json; print("stdlib ok")' >/dev/null 2>&1 \
  || chroot "$work/rootfs" python3 -c 'import resource, venv, ssl, sqlite3, json' \
  || die "the root filesystem's python3 lacks standard modules"

log "importing root filesystem as $tag"
tar -C "$work/rootfs" -c . | docker import \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$tag" >/dev/null
log "built $tag"
