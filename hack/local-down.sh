#!/usr/bin/env bash
# Stops the local cluster that hack/local-up.sh started, in either mode: `helm uninstall` of
# Ferrovirt's release, the real node with hack/node/down.sh (its pods, QEMU included), the
# host-run components of --dev mode (virt-api, virt-controller, virt-handler, devnode and its
# launcher pods), then the control plane; and checks that nothing of it runs. Idempotent.
# Keeps .ferrovirt/ (certificates, etcd data) for the next local-up; --purge removes it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
exec </dev/null

purge=0
[[ "${1:-}" == "--purge" ]] && purge=1

# Whether pid $1 is one of ours: it runs with $LOCAL_DIR as its working directory.
real_dir="$(realpath -m "$LOCAL_DIR")"
ours() { [[ "$(readlink "/proc/$1/cwd" 2>/dev/null)" == "$real_dir" ]]; }

stop() { stop_pidfile "$1" "$LOCAL_DIR/pids/$1.pid"; }

api_up() {
  [[ -f "$LOCAL_DIR/kubeconfig" && -f "$LOCAL_DIR/pids/kube-apiserver.pid" ]] \
    && kill -0 "$(<"$LOCAL_DIR/pids/kube-apiserver.pid")" 2>/dev/null
}
# The helm release first (the default mode), while the node still runs its pods: its
# Deployments, the virt-handler DaemonSet, APIServices and webhooks go. VM objects stay in
# etcd (a later local-up brings them back); their launcher pods go with the node below.
helm="$FERROVIRT_CACHE/helm-v$HELM_VERSION/helm"
if api_up && [[ -x "$helm" ]] \
    && "$helm" status "$RELEASE" -n "$RELEASE_NAMESPACE" --kubeconfig "$LOCAL_DIR/kubeconfig" >/dev/null 2>&1; then
  t=$(now)
  log "helm uninstall $RELEASE -n $RELEASE_NAMESPACE"
  "$helm" uninstall "$RELEASE" -n "$RELEASE_NAMESPACE" --kubeconfig "$LOCAL_DIR/kubeconfig" \
    --wait --timeout 2m >/dev/null 2>&1 \
    && log "  uninstalled in $(( $(now) - t ))s" \
    || log "  helm uninstall failed; the node goes anyway"
fi

# virt-api's admission webhooks fail closed: left registered while virt-api is stopped, they
# would refuse every VM write, including the next local-up's checks. local-up registers them
# again once virt-api answers. (Names: virt-api's defaults.)
if api_up; then
  "$(control_plane_dir)/kubectl" --kubeconfig "$LOCAL_DIR/kubeconfig" --request-timeout=10s delete \
    mutatingwebhookconfiguration/virt-api-mutator validatingwebhookconfiguration/virt-api-validator \
    --ignore-not-found >/dev/null 2>&1 && log "removed virt-api's webhook configurations" \
    || log "could not remove virt-api's webhook configurations"
fi
# The real node first, while the API server still answers (its Node object goes too):
# processes, mounts, network namespace, veth, routes, iptables chain, cgroups.
if [[ -d "$LOCAL_DIR/node" ]]; then
  "$FERROVIRT_ROOT/hack/node/down.sh" --dir "$LOCAL_DIR/node" --kubeconfig "$LOCAL_DIR/kubeconfig" \
    --keep-safety-routes || die "hack/node/down.sh could not remove the real node"
fi
if [[ -d "$LOCAL_DIR/pids" ]]; then
  control_plane=(kube-scheduler kube-controller-manager kube-apiserver etcd)
  # Ferrovirt's components first, then the control plane from the top down.
  for f in "$LOCAL_DIR"/pids/*.pid; do
    [[ -e "$f" ]] || continue
    name="$(basename "$f" .pid)"
    [[ " ${control_plane[*]} " == *" $name "* ]] || stop "$name"
  done
  for name in "${control_plane[@]}"; do stop "$name"; done
fi
# The safety routes (unreachable node ranges) outlived the node while the API server ran:
# without them, a call to a webhook's ClusterIP would take the default route off the machine.
"$FERROVIRT_ROOT/hack/node/down.sh" --safety-routes
# Launcher pods outlive devnode (as containers outlive kubelet): kill them, and their QEMU
# with them (each pod is a PID namespace).
if [[ -d "$LOCAL_DIR/devnode" ]]; then
  bin="${CARGO_TARGET_DIR:-$FERROVIRT_ROOT/target}/debug"
  "$bin/devnode" stop-all --state-dir "$LOCAL_DIR/devnode" >&2 || log "devnode stop-all failed"
fi
# The per-VMI directories of the guests just stopped.
run_dir="${FERROVIRT_RUN_DIR:-/var/run/ferrovirt}"
[[ -d "$run_dir/vmis" ]] && rm -rf "${run_dir:?}/vmis/"*

# Nothing may be left: neither a process in $LOCAL_DIR nor one naming it.
sleep 0.2
left=()
for d in /proc/[0-9]*; do
  pid="${d#/proc/}"
  ours "$pid" && left+=("$pid")
done
# A control-plane binary naming $LOCAL_DIR, wherever it runs (a log viewer is left alone).
while read -r pid; do
  [[ -n "$pid" ]] || continue
  case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
    etcd|kube-apiserver|kube-controll*|kube-scheduler) left+=("$pid") ;;
  esac
done < <(pgrep -f -- "$LOCAL_DIR/" || true)
if [[ ${#left[@]} -gt 0 ]]; then
  log "still running: $(ps -o pid=,args= -p "$(printf '%s,' "${left[@]}" | sed 's/,$//')" 2>/dev/null || true)"
  for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${left[@]}"; do ours "$pid" && die "could not stop $pid"; done
  log "killed the leftovers"
fi

if [[ $purge -eq 1 ]]; then
  rm -rf "$LOCAL_DIR"
  log "removed $LOCAL_DIR"
fi
log "local cluster stopped; nothing of it is running"
