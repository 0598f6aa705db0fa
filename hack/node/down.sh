#!/usr/bin/env bash
# Removes a node that hack/node/up.sh started, and checks that nothing of it is left:
#   hack/node/down.sh --dir DIR [--kubeconfig ADMIN_KUBECONFIG] [--purge]
#   hack/node/down.sh --name NAME --index N   (a node whose directory is gone)
# Stops kubelet, removes every pod sandbox (crictl), stops kube-proxy, containerd, the
# registry and the holder, kills whatever still runs in the node's cgroups or network
# namespace (pod processes, shims), deletes the network namespace, the veth (and the routes
# through it), the DNAT chain, the node's cgroups, the safety routes with the last node
# (unless --keep-safety-routes; --safety-routes removes only them), and (with --kubeconfig)
# the Node object. Idempotent. Keeps DIR's
# files (images, registry storage, certificates) for the next up; --purge removes DIR too.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
exec </dev/null

usage="usage: down.sh --dir DIR [--kubeconfig FILE] [--purge] [--keep-safety-routes] | --name NAME --index N | --safety-routes"
dir="" kubeconfig="" purge=0 name="" index="" keep_safety=0
# The shared safety routes go with the last node (no veth fvN left).
remove_safety_routes() {
  ip -o link show | grep -q ': fvn[0-9]*[@:]' && return 0
  local net
  while read -r _ net _; do
    ip route del unreachable "$net" metric "$NODE_SAFETY_METRIC" && log "deleted safety route $net"
  done < <(ip route show type unreachable | grep "metric $NODE_SAFETY_METRIC\b" || true)
}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --keep-safety-routes) keep_safety=1; shift ;;
    --safety-routes)
      name=none index=0
      source "$FERROVIRT_ROOT/hack/node/names.sh"
      remove_safety_routes
      exit 0 ;;
    --dir) dir="$2"; shift 2 ;;
    --kubeconfig) kubeconfig="$2"; shift 2 ;;
    --purge) purge=1; shift ;;
    --name) name="$2"; shift 2 ;;
    --index) index="$2"; shift 2 ;;
    *) die "unknown argument $1 ($usage)" ;;
  esac
done
if [[ -n "$dir" ]]; then
  [[ -f "$dir/node.id" ]] || { log "no node in $dir"; exit 0; }
  dir="$(realpath "$dir")"
  read -r name index <"$dir/node.id"
fi
[[ -n "$name" && -n "$index" ]] || die "$usage"
source "$FERROVIRT_ROOT/hack/node/names.sh"

pid_of() { [[ -n "$dir" && -f "$dir/pids/$1.pid" ]] && cat "$dir/pids/$1.pid"; }
# Whether pid $1 is one of the node's: started in DIR (start_bg) or inside the node.
ours() {
  [[ -n "$dir" ]] || return 1
  local cwd; cwd="$(readlink "/proc/$1/cwd" 2>/dev/null)" || return 1
  [[ "$cwd" == "$dir" || "$cwd" == "$dir/"* ]]
}
stop() { [[ -n "$dir" ]] || return 0; stop_pidfile "$1" "$dir/pids/$1.pid"; }

holder="$(pid_of holder || true)"
[[ -n "$holder" ]] && ! ours "$holder" && holder=""
stop kubelet
if [[ -n "$holder" ]]; then
  # Pods outlive kubelet (their shims are not containerd's children): stop them through CRI.
  crictl=(nsenter -t "$holder" -n -m -- "$(cri_tools_dir)/crictl" --config "$dir/etc/crictl.yaml")
  if [[ -x "$(cri_tools_dir)/crictl" ]] && "${crictl[@]}" version >/dev/null 2>&1; then
    n="$("${crictl[@]}" pods -q 2>/dev/null | wc -l)"
    if [[ "$n" -gt 0 ]]; then
      "${crictl[@]}" stopp $("${crictl[@]}" pods -q) >/dev/null 2>&1 || true
      "${crictl[@]}" rmp -a -f >/dev/null 2>&1 || true
      log "removed $n pod sandboxes"
    fi
  fi
fi
stop kube-proxy
stop containerd
stop registry

# What may still run: shims and containers (in the node's cgroups), anything in its namespaces.
cgroup_pids() {
  local h
  for h in /sys/fs/cgroup/*/ferrovirt/"$NODE_NAME"; do
    [[ -d "$h" ]] && find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -u
}
# Processes in the node's network namespace (the holder's, or the one /run/netns names).
ns_pids() {
  local net d p
  if [[ -n "$holder" ]]; then
    net="$(readlink "/proc/$holder/ns/net" 2>/dev/null)" || return 0
  elif [[ -e "/run/netns/$NODE_NETNS" ]]; then
    net="net:[$(stat -L -c %i "/run/netns/$NODE_NETNS")]"
  else
    return 0
  fi
  for d in /proc/[0-9]*; do
    p="${d#/proc/}"
    [[ "$p" == "$holder" ]] && continue
    [[ "$(readlink "$d/ns/net" 2>/dev/null)" == "$net" ]] && echo "$p"
  done
  return 0
}
for round in 1 2 3; do
  left="$( (cgroup_pids; ns_pids) | sort -u | tr '\n' ' ')"
  [[ -n "${left// }" ]] || break
  log "killing what is left of the node (round $round): $left"
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null || true
  sleep 0.5
done
if [[ -z "$dir" ]]; then
  # No pid files: the registry is the one serving this node's address (in the host's
  # namespaces, so not among the processes above).
  for p in $(pgrep -x registry || true); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "REGISTRY_HTTP_ADDR=$NODE_REGISTRY" \
      && kill -TERM "$p" && log "stopped registry ($p)"
  done
fi
stop holder # its mount namespace (the node's /run, /var, sysctl files) goes with it

if ip netns list 2>/dev/null | grep -q "^$NODE_NETNS\b"; then
  ip netns del "$NODE_NETNS"
  log "deleted network namespace $NODE_NETNS"
fi
if ip link show "$NODE_HOST_IF" >/dev/null 2>&1; then
  ip link del "$NODE_HOST_IF"
  log "deleted veth $NODE_HOST_IF"
fi
# The routes via the veth went with it. The safety routes stay while a caller still runs
# an API server that may dial the node's ranges (local-down removes them afterwards).
[[ $keep_safety -eq 1 ]] || remove_safety_routes
while iptables -t nat -C PREROUTING -i "$NODE_HOST_IF" -j "$NODE_CHAIN" -m comment --comment "ferrovirt node $NODE_NAME" 2>/dev/null; do
  iptables -t nat -D PREROUTING -i "$NODE_HOST_IF" -j "$NODE_CHAIN" -m comment --comment "ferrovirt node $NODE_NAME"
done
if iptables -t nat -S "$NODE_CHAIN" >/dev/null 2>&1; then
  iptables -t nat -F "$NODE_CHAIN"
  iptables -t nat -X "$NODE_CHAIN"
  log "deleted iptables chain nat/$NODE_CHAIN"
fi
for h in /sys/fs/cgroup/*/ferrovirt/"$NODE_NAME"; do
  [[ -d "$h" ]] || continue
  find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  [[ -d "$h" ]] && log "warning: cgroup $h is still busy"
  rmdir "$(dirname "$h")" 2>/dev/null || true # /ferrovirt, when no other node uses it
done
if [[ -n "$kubeconfig" && -f "$kubeconfig" ]]; then
  "$(control_plane_dir)/kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s delete node "$NODE_NAME" \
    --ignore-not-found >/dev/null 2>&1 || log "could not delete the Node object (API server down?)"
fi

# Nothing may be left.
problems=()
for d in /proc/[0-9]*; do ours "${d#/proc/}" && problems+=("process ${d#/proc/}"); done
[[ -e "/run/netns/$NODE_NETNS" ]] && problems+=("netns $NODE_NETNS")
ip link show "$NODE_HOST_IF" >/dev/null 2>&1 && problems+=("interface $NODE_HOST_IF")
iptables -t nat -S "$NODE_CHAIN" >/dev/null 2>&1 && problems+=("iptables chain $NODE_CHAIN")
ls -d /sys/fs/cgroup/*/ferrovirt/"$NODE_NAME" >/dev/null 2>&1 && problems+=("cgroups ferrovirt/$NODE_NAME")
[[ ${#problems[@]} -eq 0 ]] || die "left behind: ${problems[*]}"
[[ -n "$dir" ]] && rm -f "$dir/node.env" "$dir/holder.ready"
if [[ $purge -eq 1 && -n "$dir" ]]; then
  rm -rf "$dir"
  log "removed $dir"
fi
log "node $NODE_NAME removed; nothing of it is left"
