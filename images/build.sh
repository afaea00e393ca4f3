#!/usr/bin/env bash
# Build the base and runner images, rebuilding only what changed.
#
# Usage: images/build.sh [--force]        (run from anywhere; uses the project venv's python)
#
# Base image, first match wins:
#   DAD_BASE_FROM=IMAGE   use that image (pulled if missing), e.g. python:3.11-slim on a machine
#                         with a registry;
#   root on Debian        debootstrap + docker import (no registry needed);
#   otherwise             python:3.11-slim from the registry.
# Tags: dad-sandbox-base:<inputs hash>, dad-sandbox-runner:<version>-<inputs hash> and
# dad-sandbox-runner:<version> (what the policies name). A no-op rebuild only hashes files.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
force=false
[ "${1:-}" = "--force" ] && force=true

log() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }
# The runner image's only third-party packages (and what they pull in): the run and runner layers' imports.
RUNNER_DEPS="pydantic|structlog"
hash_files() { cat "$@" | sha256sum | cut -c1-12; }

docker info >/dev/null 2>&1 || die "no Docker engine answers; run 'make engine' first"
version=$("$python" -c 'import sys; sys.path.insert(0, sys.argv[1]); from dad_sandbox._version import __version__ as v; print(v)' "$root")

# ---- base
suite=${DAD_BASE_SUITE:-bookworm}
if [ -n "${DAD_BASE_FROM:-}" ]; then
  base_mode=from; base_src=$DAD_BASE_FROM
elif [ "$(id -u)" = 0 ] && grep -qiE '^(ID|ID_LIKE)=.*debian' /etc/os-release 2>/dev/null; then
  base_mode=debootstrap; base_src=$suite
else
  base_mode=from; base_src=python:3.11-slim
fi
base_hash=$( { cat "$here/base/build-debootstrap.sh"; echo "$base_mode $base_src ${DAD_BASE_PACKAGES:-}"; } | sha256sum | cut -c1-12)
base_tag=dad-sandbox-base:$base_hash
if $force || ! docker image inspect "$base_tag" >/dev/null 2>&1; then
  if [ "$base_mode" = debootstrap ]; then
    log "building base image $base_tag from Debian $suite with debootstrap (no registry needed)"
    bash "$here/base/build-debootstrap.sh" "$base_tag"
  else
    docker image inspect "$base_src" >/dev/null 2>&1 || { log "pulling $base_src"; docker pull "$base_src" >/dev/null; }
    docker tag "$base_src" "$base_tag"
    log "base image $base_tag is $base_src"
  fi
else
  log "base image $base_tag is up to date"
fi
base_id=$(docker image inspect --format '{{.Id}}' "$base_tag")

# ---- runner: its inputs are the base, the Dockerfile, the package sources and the dependency list
inputs=$(cd "$root" && find dad_sandbox policies -type f \( -name '*.py' -o -name '*.toml' \) | sort)
runner_hash=$( { echo "$base_id"; cat "$here/runner/Dockerfile" "$here/build.sh" "$root/pyproject.toml" "$here/init/dad-init.c"; (cd "$root" && cat $inputs); } | sha256sum | cut -c1-12)
runner_tag=dad-sandbox-runner:$version-$runner_hash
mkdir -p "$root/build"
echo "$version-$runner_hash" > "$root/build/runner-tag"  # make test runs with this exact image
if ! $force && docker image inspect "$runner_tag" >/dev/null 2>&1; then
  docker tag "$runner_tag" "dad-sandbox-runner:$version"
  log "runner image $runner_tag is up to date (tagged dad-sandbox-runner:$version)"
  exit 0
fi

ctx=$(mktemp -d /var/tmp/dad-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/wheels" "$root/build/wheel-cache"
cp "$here/runner/Dockerfile" "$ctx/"

# dad-init, PID 1 of every run container (enforces the deadline without the host): a static binary
# built here, so the image needs no compiler.
command -v gcc >/dev/null 2>&1 || die "gcc is needed to build images/init/dad-init.c (Debian: apt-get install gcc libc6-dev)"
gcc -static -O2 -Wall -Wextra -o "$ctx/dad-init" "$here/init/dad-init.c" || die "compiling dad-init failed"

# Dependency wheels for CPython 3.11 on this architecture, cached per dependency list.
arch=$(uname -m)
deps=$("$python" - "$root/pyproject.toml" <<'PY'
import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))
PY
)
deps_hash=$(printf '%s\n%s\n' "$deps" "$arch" | sha256sum | cut -c1-12)
cache=$root/build/wheel-cache/$deps_hash
if [ ! -f "$cache/.complete" ]; then
  log "downloading dependency wheels for CPython 3.11/$arch into $cache"
  rm -rf "$cache"; mkdir -p "$cache"
  # shellcheck disable=SC2086 # one requirement per line
  "$python" -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform "manylinux2014_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux_2_28_$arch" \
    --platform any -d "$cache" pip $(printf '%s\n' "$deps" | tr '\n' ' ') 2>"$cache.err" \
    || { grep -v "is ignored: it is neither" "$cache.err" >&2; die "could not download dependency wheels (is a PyPI mirror reachable?)"; }
  rm -f "$cache.err"
  touch "$cache/.complete"
fi
cp "$cache"/*.whl "$ctx/wheels/"
# What the in-container entrypoint imports beyond the standard library (tests/unit/test_layering.py
# checks that the run and runner layers need nothing else); versions as pyproject.toml pins them.
printf '%s\n' "$deps" | grep -iE "^($RUNNER_DEPS)([^a-z0-9_-]|$)" > "$ctx/wheels/runner-requirements.txt"
[ "$(wc -l < "$ctx/wheels/runner-requirements.txt")" -eq "$(echo "$RUNNER_DEPS" | tr '|' '\n' | wc -l)" ] \
  || die "pyproject.toml does not list every runner dependency ($RUNNER_DEPS)"
log "building the dad-sandbox wheel"
"$python" -m pip wheel -q --no-deps -w "$ctx/wheels" "$root" >/dev/null || die "building the dad-sandbox wheel failed"

log "building runner image $runner_tag on $base_tag"
export DOCKER_BUILDKIT=0
docker build -q --force-rm --build-arg "BASE=$base_tag" -t "$runner_tag" -t "dad-sandbox-runner:$version" \
  --label "dad.inputs=$runner_hash" "$ctx" >/dev/null 2>"$ctx/build.err" \
  || { cat "$ctx/build.err" >&2; die "docker build failed"; }
log "built $runner_tag (tagged dad-sandbox-runner:$version)"
