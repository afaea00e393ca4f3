#!/usr/bin/env bash
# Make sure a Docker engine answers, provisioning one only on a bare root Debian machine.
#
# Why a script and not Python: it runs before the project virtualenv exists and must work
# with nothing but bash, apt and the docker CLI. On a machine where Docker already answers
# it touches nothing and returns in well under a second.
#
# Environment:
#   DAD_ENGINE_LOG        dockerd log file (default: /var/log/dad-sandbox-dockerd.log)
#   DAD_ENGINE_WAIT       seconds to wait for dockerd to answer (default: 60)
#   DAD_ENGINE_EXTRA_ARGS extra dockerd arguments
#   RUNTIME               runc (default), runsc or crun: also install gVisor (or crun) and register it with
#                         our dockerd; every one of the two found installed is registered
set -euo pipefail

log() { printf 'engine: %s\n' "$*" >&2; }
die() { printf 'engine: error: %s\n' "$*" >&2; exit 1; }

runtime=${RUNTIME:-runc}
pidfile=/run/dad-sandbox-dockerd.pid
config=/etc/dad-sandbox/dockerd.json
log_file=${DAD_ENGINE_LOG:-/var/log/dad-sandbox-dockerd.log}
wait_s=${DAD_ENGINE_WAIT:-60}

ours() {  # true if the running dockerd is the one this script started
  [ -f "$pidfile" ] && [ "$(cat /proc/"$(cat "$pidfile")"/comm 2>/dev/null)" = dockerd ]
}
has_runtime() { docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q "\"$1\""; }

if docker info >/dev/null 2>&1; then
  if [ "$runtime" = runc ] || has_runtime "$runtime"; then
    exit 0
  fi
  if ! ours; then
    die "the running Docker engine has no '$runtime' runtime and was not started by this script, so it
       is left alone. Install it (Debian: apt-get install $runtime) and add to /etc/docker/daemon.json:
       {\"runtimes\": {\"runsc\": {\"path\": \"/usr/bin/runsc\",
        \"runtimeArgs\": [\"--network=none\", \"--platform=ptrace\", \"--host-uds=open\"]},
        \"crun\": {\"path\": \"/usr/bin/crun\"}}}
       then restart Docker."
  fi
  log "restarting our dockerd to register the '$runtime' runtime"
  kill "$(cat "$pidfile")"
  for _ in $(seq 1 120); do ours || break; sleep 0.25; done
fi

is_debian=false
if [ -r /etc/os-release ] && grep -qiE '^(ID|ID_LIKE)=.*debian' /etc/os-release; then
  is_debian=true
fi
if [ "$(id -u)" != 0 ] || [ "$is_debian" != true ]; then
  die "no Docker engine answers ('docker info' failed) and this is not root on Debian, so nothing
       was installed. Install Docker Engine (https://docs.docker.com/engine/install/), start it,
       and make sure your user may talk to it (e.g. the 'docker' group); then run this again."
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "no dockerd found: installing Debian's docker.io (apt-get update + install)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends docker.io tini >/dev/null
  log "installed $(dockerd --version)"
fi

if { [ "$runtime" = runsc ] || [ "$runtime" = crun ]; } && ! command -v "$runtime" >/dev/null 2>&1; then
  log "installing Debian's $runtime"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$runtime" >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq "$runtime" >/dev/null; }
fi
# Our daemon's own config file (never /etc/docker/daemon.json). gVisor works here only with
# --network=none and the ptrace platform (measured), so those are its runtime arguments.
# --host-uds=open lets a run connect to a unix socket bind-mounted into it (never create one):
# the egress proxy of network = "allowlist" is reached that way; runc allows the same by default.
mkdir -p "$(dirname "$config")"
# crun needs no arguments: it reads the same OCI spec as runc.
entries=()
if command -v runsc >/dev/null 2>&1; then
  entries+=("$(printf '"runsc": {"path": "%s", "runtimeArgs": ["--network=none", "--platform=ptrace", "--host-uds=open"]}' \
    "$(command -v runsc)")")
fi
if command -v crun >/dev/null 2>&1; then
  entries+=("$(printf '"crun": {"path": "%s"}' "$(command -v crun)")")
fi
if [ ${#entries[@]} -gt 0 ]; then
  (IFS=,; printf '{"runtimes": {%s}}\n' "${entries[*]}") > "$config"
else
  echo '{}' > "$config"
fi

if pgrep -x dockerd >/dev/null 2>&1; then
  log "dockerd is already running but does not answer yet; waiting for it"
else
  log "starting dockerd (no bridge, no iptables, no masquerading); log: $log_file"
  mkdir -p "$(dirname "$log_file")"
  # Its own session (setsid): a signal to the caller's process group (`timeout make test`, Ctrl-C,
  # a CI job being cancelled) must not take the engine - and every other user's runs - with it.
  # shellcheck disable=SC2086 # extra args are meant to split
  setsid nohup dockerd --config-file "$config" --bridge=none --iptables=false --ip-masq=false ${DAD_ENGINE_EXTRA_ARGS:-} \
    >>"$log_file" 2>&1 </dev/null &
  # Marks the engine as ours: tests that restart the engine only do so when this pid is the daemon.
  echo $! > "$pidfile"
  disown || true
fi

for _ in $(seq 1 $((wait_s * 4))); do
  if docker info >/dev/null 2>&1; then
    log "Docker engine answers: server $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
    exit 0
  fi
  sleep 0.25
done
tail -n 20 "$log_file" >&2 || true
die "dockerd did not answer within ${wait_s}s; its log is $log_file (last lines above)"
