#!/usr/bin/env bash
# Make sure a rootful Podman answers on its own Docker-compatible socket, provisioning it on root
# Debian, and load the runner image into it. The Docker engine is never touched: Podman has its
# own socket, its own storage (/var/lib/containers) and its own config file.
#
# Why these settings (measured with Debian bookworm's Podman 4.3 on this kind of machine):
# * catatonit: Podman's `init` binary; without it a container asking for an init fails to create
#   ("container-init binary not found").
# * default_ulimits: Podman raises nofile/nproc of every container to 1048576/4194304 by default;
#   where the service's own hard limits are lower (a container host, a CI runner) the start fails
#   with "error setting rlimit type 7: operation not permitted". We pin them to the service's limits.
# * cgroup_manager=cgroupfs, events_logger=file: no systemd/journald on such machines.
#
# Usage: ENGINE=podman make engine   (or: bash scripts/engine-podman.sh)
# Then:  DOCKER_HOST=unix:///run/dad-sandbox-podman/podman.sock dad-sandbox doctor
#
# Environment:
#   DAD_PODMAN_SOCKET  socket path (default: /run/dad-sandbox-podman/podman.sock)
#   DAD_PODMAN_LOG     service log (default: /var/log/dad-sandbox-podman.log)
#   DAD_PODMAN_WAIT    seconds to wait for the service to answer (default: 60)
#   DAD_PODMAN_NO_IMAGE=1  do not load the runner image
set -euo pipefail

log() { printf 'engine-podman: %s\n' "$*" >&2; }
die() { printf 'engine-podman: error: %s\n' "$*" >&2; exit 1; }

socket=${DAD_PODMAN_SOCKET:-/run/dad-sandbox-podman/podman.sock}
log_file=${DAD_PODMAN_LOG:-/var/log/dad-sandbox-podman.log}
wait_s=${DAD_PODMAN_WAIT:-60}
pidfile=/run/dad-sandbox-podman.pid
conf=/etc/dad-sandbox/containers.conf
# Every podman call of ours (service, load) reads our config, never /etc/containers/containers.conf.
export CONTAINERS_CONF=$conf

answers() { curl -fsS --max-time 5 --unix-socket "$socket" http://d/_ping >/dev/null 2>&1; }
ours() { [ -f "$pidfile" ] && [ "$(cat /proc/"$(cat "$pidfile")"/comm 2>/dev/null)" = podman ]; }

write_conf() {  # <nofile> <nproc>: our containers.conf with those default_ulimits
  local nofile=$1 nproc=$2
  [ "$nofile" = unlimited ] && nofile=1048576
  [ "$nproc" = unlimited ] && nproc=4194304
  mkdir -p "$(dirname "$conf")"
  cat > "$conf" <<EOF
# Written by dad-sandbox scripts/engine-podman.sh for its own Podman service (CONTAINERS_CONF).
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
init_path = "$(command -v catatonit)"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
# crun 1.8 refuses cgroup hybrid mode ("cgroups in hybrid mode not supported"); runc works.
runtime = "runc"
EOF
}

start_service() {
  if ours; then return; fi
  log "starting 'podman system service' on $socket; log: $log_file"
  mkdir -p "$(dirname "$socket")" "$(dirname "$log_file")"
  chmod 0710 "$(dirname "$socket")"
  rm -f "$socket"
  # Its own session (setsid) like our dockerd: a signal to the caller's process group must not
  # take the engine down. --time=0: never exit when idle.
  setsid nohup podman system service --time=0 "unix://$socket" >>"$log_file" 2>&1 </dev/null &
  echo $! > "$pidfile"
  disown || true
}

wait_answers() {
  for _ in $(seq 1 $((wait_s * 4))); do answers && return 0; sleep 0.25; done
  tail -n 20 "$log_file" >&2 || true
  die "podman system service did not answer within ${wait_s}s; its log is $log_file (last lines above)"
}

service_limits() {  # "<nofile> <nproc>": hard limits of our running service
  awk '/^Max open files/ {f=$5} /^Max processes/ {p=$4} END {print f, p}' "/proc/$(cat "$pidfile")/limits" 2>/dev/null
}

is_debian=false
if [ -r /etc/os-release ] && grep -qiE '^(ID|ID_LIKE)=.*debian' /etc/os-release; then
  is_debian=true
fi

if ! answers; then
  if [ "$(id -u)" != 0 ] || [ "$is_debian" != true ]; then
    die "no Podman service answers on $socket and this is not root on Debian, so nothing was
       installed. Install podman and catatonit, set default_ulimits (nofile, nproc) in
       containers.conf to limits your host allows, start 'podman system service --time=0
       unix://$socket', and run this again."
  fi
  missing=()
  for cmd in podman catatonit curl; do command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian's podman, catatonit, crun, conmon (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    pkgs=(podman catatonit crun conmon curl)
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; }
    log "installed $(podman --version)"
  fi
  # The limits the service (and so conmon and the OCI runtime) may hand to a container. Podman
  # lowers some of its own at start-up (nproc 32768 here, under a shell hard limit of 96368), so
  # the service is started once, its real limits are read, and it is restarted with them if needed.
  write_conf "$(ulimit -Hn)" "$(ulimit -Hu)"
  start_service
  wait_answers
  read -r nofile nproc < <(service_limits)
  if [ -n "$nofile" ] && ! grep -qF "\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"" "$conf"; then
    log "the service runs with nofile=$nofile nproc=$nproc: restarting it with those default_ulimits"
    write_conf "$nofile" "$nproc"
    kill "$(cat "$pidfile")"
    for _ in $(seq 1 40); do ours || break; sleep 0.25; done
    start_service
    wait_answers
  fi
fi
version=$(curl -fsS --unix-socket "$socket" http://d/version | sed -n 's/.*"Version":"\([^"]*\)".*/\1/p' | head -1)
log "Podman answers on $socket: $version (DOCKER_HOST=unix://$socket)"

# The runner image: the one this checkout's Docker build made (build/runner-tag), copied over.
if [ "${DAD_PODMAN_NO_IMAGE:-}" != 1 ] && [ -f build/runner-tag ]; then
  image="dad-sandbox-runner:$(cat build/runner-tag)"
  if curl -fsS --unix-socket "$socket" "http://d/v1.41/images/$image/json" >/dev/null 2>&1; then
    exit 0
  fi
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    die "$image is not on the Docker engine either: run 'make image' first"
  fi
  log "loading $image into Podman (docker save | podman load)"
  docker save "$image" | podman --url "unix://$socket" load -q >/dev/null
  # podman load keeps the name with a localhost/ prefix only for short names it cannot resolve;
  # tag it exactly as the Docker API client asks for it.
  log "loaded $image"
fi
