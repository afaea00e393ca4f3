#!/bin/sh
# PID 2 of a dad-sandbox cluster node (docker's --init is PID 1): make this container able to run
# its own dockerd, cut it off from everything but its private network, then exec dockerd.
#
# Why each step (measured on Docker 20.10, runc, cgroup v1; see images/node/README.md):
# - /sys and the cgroup mounts come read-only without --privileged (which the host engine refuses
#   here), and the inner dockerd must create cgroups and mount propagation must be shared.
# - The network docker gave us has a default route via the host, which forwards: deleted here,
#   and the harness refuses the node if a default route is still there.
# - A killed node leaves /run/docker* and /run/containerd behind; dockerd refuses to start on them.
set -eu

log() { printf 'dad-node: %s\n' "$*" >&2; }

# read-only here is a per-mount flag, so each is remounted as a bind ("remount,rw" alone: busy)
for m in /sys /sys/fs/cgroup /sys/fs/cgroup/*; do
  if [ -d "$m" ] && mountpoint -q "$m"; then
    mount -o remount,bind,rw "$m" || { log "cannot make $m writable"; exit 71; }
  fi
done
mount --make-rshared /

# No way out: delete every default route (v4 and v6), then prove it.
while ip -4 route show default | grep -q .; do ip -4 route del default; done
while ip -6 route show default 2>/dev/null | grep -q .; do ip -6 route del default; done
if ip -4 route show default | grep -q . || ip -6 route show default 2>/dev/null | grep -q .; then
  log "a default route is still present; refusing to start"
  exit 70
fi

rm -rf /run/docker /run/docker.pid /run/docker.sock /run/containerd /var/run/docker.sock

sock_dir=${DAD_NODE_SOCKET_DIR:-/dad-node}
mkdir -p "$sock_dir"
rm -f "$sock_dir/docker.sock"
export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1
log "starting dockerd (socket $sock_dir/docker.sock)"
exec dockerd \
  -H unix:///var/run/docker.sock -H "unix://$sock_dir/docker.sock" \
  --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
  --no-new-privileges \
  --log-driver=json-file --log-opt max-size=1m \
  --storage-driver=overlay2 \
  ${DAD_NODE_DOCKERD_ARGS:-}
