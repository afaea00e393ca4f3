#!/usr/bin/env bash
# Stand up (and tear down) dockerd-in-a-container nodes on the shared host engine: a local Docker
# Swarm for the swarm engine's tests, or one standalone engine reached through a unix socket.
#
# Usage:
#   scripts/cluster.sh up   [--name NAME] [--nodes N] [--standalone] [--no-shared] [--no-images]
#   scripts/cluster.sh down [--name NAME]
#   scripts/cluster.sh env  [--name NAME]      # prints the cluster's state file (shell syntax)
#
#   --name NAME    cluster name (default: $DAD_CLUSTER_NAME or "dad"); every container, volume and
#                  network it makes carries the label dad.cluster=NAME, and `down` removes exactly those
#   --nodes N      number of nodes (default 3; 1 with --standalone)
#   --standalone   no Swarm: each node is a plain dockerd (e.g. a "remote" engine for tests)
#   --no-shared    do not mount the shared directory into the nodes: the node's engine then sees
#                  nothing of the host's filesystem (implied by --standalone unless --shared is given)
#   --shared       mount the shared directory also in --standalone mode
#   --no-images    do not load the runner image into the nodes
#
# What `up` makes (STATE=${DAD_CLUSTER_STATE:-/var/tmp/dad-cluster}/NAME):
#   network   dad-cluster-NAME        a private bridge network; each node's default route is deleted
#                                     by its entrypoint and checked here: a node with a default route
#                                     is refused and the whole cluster torn down
#   nodes     dad-cluster-NAME-node-I (hostname node-I), a container running its own dockerd from
#                                     images/node (build/node-tag), /var/lib/docker on volume
#                                     dad-cluster-NAME-node-I
#   sockets   STATE/nodes/node-I/docker.sock   each node's engine, reachable from the host only
#   shared    STATE/shared             mounted at the same path in every node (the run root lives
#                                     under it, as NFS would in production)
#   state     STATE/cluster.env        NAME, MANAGER socket, NODES, SHARED (read by tests/cluster)
# In Swarm mode node-1 is the only manager; all nodes take tasks, carry the label sandbox=true,
# and the dispatcher heartbeat is 1 s so a lost node is noticed in ~3 s.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

cmd=${1:-}
[ -n "$cmd" ] && shift
name=${DAD_CLUSTER_NAME:-dad}
nodes=""
standalone=false
shared_mode=default
load_images=true
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name=${2:?--name needs a value}; shift 2 ;;
    --nodes) nodes=${2:?--nodes needs a value}; shift 2 ;;
    --standalone) standalone=true; shift ;;
    --no-shared) shared_mode=no; shift ;;
    --shared) shared_mode=yes; shift ;;
    --no-images) load_images=false; shift ;;
    *) die "unknown argument '$1' (see the usage at the top of $0)" ;;
  esac
done
[[ "$name" =~ ^[a-z0-9][a-z0-9-]{0,20}$ ]] || die "cluster name '$name' must be 1-21 of [a-z0-9-]"
if [ -z "$nodes" ]; then if $standalone; then nodes=1; else nodes=3; fi; fi
[[ "$nodes" =~ ^[1-9]$ ]] || die "--nodes must be 1..9"
if [ "$shared_mode" = default ]; then if $standalone; then shared_mode=no; else shared_mode=yes; fi; fi

state=${DAD_CLUSTER_STATE:-/var/tmp/dad-cluster}/$name
net=dad-cluster-$name
label=dad.cluster=$name
node_dock() { docker -H "unix://$state/nodes/$1/docker.sock" "${@:2}"; }

down() {
  local ids
  ids=$(docker ps -aq --filter "label=$label")
  [ -z "$ids" ] || docker rm -f $ids >/dev/null
  ids=$(docker volume ls -q --filter "label=$label")
  [ -z "$ids" ] || docker volume rm -f $ids >/dev/null
  ids=$(docker network ls -q --filter "label=$label")
  [ -z "$ids" ] || docker network rm $ids >/dev/null
  # the state dir holds only what `up` made: sockets, the shared dir (runs of the tests) and cluster.env
  rm -rf "$state"
  log "cluster '$name' removed (containers, volumes, network and $state)"
}

check_no_route() {  # refuse a node that can reach anything beyond its private network
  local n=$1 routes
  routes=$(docker exec "dad-cluster-$name-$n" sh -c 'ip -4 route show default; ip -6 route show default 2>/dev/null') \
    || die "cannot read the routes of $n"
  if [ -n "$routes" ]; then
    log "node $n has a default route ($routes): refusing to go on"
    return 1
  fi
}

up() {
  docker info >/dev/null 2>&1 || die "no Docker engine answers; run 'make engine' first"
  if docker ps -aq --filter "label=$label" | grep -q .; then
    log "cluster '$name' has leftovers: removing them first"
    down
  fi
  local node_tag runner_tag=""
  node_tag=$(bash "$root/images/node/build.sh")
  if $load_images; then
    [ -s "$root/build/runner-tag" ] || die "no build/runner-tag: run 'make image' first (or pass --no-images)"
    runner_tag=dad-sandbox-runner:$(cat "$root/build/runner-tag")
    docker image inspect "$runner_tag" >/dev/null 2>&1 || die "$runner_tag is missing: run 'make image'"
  fi
  # whatever stops `up` half-way (a die, a failed command, a signal) leaves nothing behind
  trap 'rc=$?; if [ ! -f "$state/cluster.env" ]; then log "up failed: tearing down"; down; fi; exit $rc' EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$state/shared"
  chmod 0711 "$state"
  docker network create --driver bridge --internal --label "$label" "$net" >/dev/null

  local i n mounts=()
  [ "$shared_mode" = yes ] && mounts=(-v "$state/shared:$state/shared")
  for i in $(seq 1 "$nodes"); do
    n=node-$i
    mkdir -p "$state/nodes/$n"
    docker volume create --label "$label" "dad-cluster-$name-$n" >/dev/null
    docker run -d --name "dad-cluster-$name-$n" --hostname "$n" --label "$label" --label "dad.cluster.node=$n" \
      --network "$net" --init \
      --cap-add ALL --cap-drop SYS_RESOURCE \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      --security-opt systempaths=unconfined --cgroupns private \
      -v "dad-cluster-$name-$n:/var/lib/docker" -v "$state/nodes/$n:/dad-node" "${mounts[@]}" \
      "$node_tag" >/dev/null
  done
  for i in $(seq 1 "$nodes"); do
    n=node-$i
    local ok=false
    for _ in $(seq 1 240); do
      if node_dock "$n" info >/dev/null 2>&1; then ok=true; break; fi
      [ "$(docker inspect -f '{{.State.Running}}' "dad-cluster-$name-$n")" = true ] || break
      sleep 0.25
    done
    $ok || { docker logs --tail 20 "dad-cluster-$name-$n" >&2 || true; die "node $n's dockerd did not answer"; }
    check_no_route "$n" || die "node $n has a default route"
  done
  log "$nodes node(s) answer, none has a default route"

  if $load_images; then
    local pids=()
    for i in $(seq 1 "$nodes"); do
      # the plain version tag on the host may name another checkout's build: tag it in the node
      ( docker save "$runner_tag" | node_dock "node-$i" load -q >/dev/null \
          && node_dock "node-$i" tag "$runner_tag" "dad-sandbox-runner:$(cut -d- -f1 "$root/build/runner-tag")" ) & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || die "loading $runner_tag into a node failed"; done
    log "loaded $runner_tag into every node"
  fi

  local manager_sock=$state/nodes/node-1/docker.sock
  if ! $standalone; then
    local ip token
    ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "dad-cluster-$name-node-1")
    node_dock node-1 swarm init --advertise-addr "$ip" --listen-addr "$ip:2377" --dispatcher-heartbeat 1s >/dev/null
    token=$(node_dock node-1 swarm join-token -q worker)
    for i in $(seq 2 "$nodes"); do
      node_dock "node-$i" swarm join --token "$token" "$ip:2377" >/dev/null
    done
    for i in $(seq 1 "$nodes"); do
      node_dock node-1 node update --label-add sandbox=true "node-$i" >/dev/null
    done
    log "swarm of $nodes node(s) ready; manager node-1 at $ip"
  fi
  # a cluster must still have no way out after Swarm set itself up
  for i in $(seq 1 "$nodes"); do check_no_route "node-$i" || die "node node-$i has a default route"; done
  local node_list=""
  for i in $(seq 1 "$nodes"); do node_list="$node_list node-$i"; done
  {
    echo "DAD_CLUSTER_NAME=$name"
    echo "DAD_CLUSTER_MODE=$($standalone && echo standalone || echo swarm)"
    echo "DAD_CLUSTER_MANAGER=unix://$manager_sock"
    echo "DAD_CLUSTER_NODES='${node_list# }'"
    echo "DAD_CLUSTER_STATE=$state"
    [ "$shared_mode" = yes ] && echo "DAD_CLUSTER_SHARED=$state/shared"
    [ -n "$runner_tag" ] && echo "DAD_CLUSTER_RUNNER=$runner_tag"
  } > "$state/cluster.env.tmp"
  mv "$state/cluster.env.tmp" "$state/cluster.env"
  trap - EXIT INT TERM
  log "ready: . $state/cluster.env   (DOCKER_HOST=unix://$manager_sock)"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  env) cat "$state/cluster.env" 2>/dev/null || die "no cluster '$name' (run: scripts/cluster.sh up --name $name)" ;;
  *) die "usage: scripts/cluster.sh up|down|env [--name NAME] [--nodes N] [--standalone] [--no-shared] [--no-images]" ;;
esac
