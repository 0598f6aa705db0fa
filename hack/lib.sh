# Shared helpers for hack/ scripts. Source it; do not run it.
# shellcheck shell=bash

FERROVIRT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export FERROVIRT_ROOT

# Pinned versions. k8s-openapi is built with the matching `v1_35` feature.
KUBE_VERSION="${KUBE_VERSION:-1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-3.6.5}"

# Everything built or downloaded once per machine lives here, outside the repo.
FERROVIRT_CACHE="${FERROVIRT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferrovirt}"
export FERROVIRT_CACHE

# Control-plane binaries: KUBEBUILDER_ASSETS (the envtest convention) wins when set.
control_plane_dir() {
  if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    echo "$KUBEBUILDER_ASSETS"
  else
    echo "$FERROVIRT_CACHE/k8s-v$KUBE_VERSION"
  fi
}

CONTROL_PLANE_BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

# KubeVirt's own virtctl (hack/build-virtctl.sh), for the tests that drive Ferrovirt with it.
VIRTCTL_VERSION="${VIRTCTL_VERSION:-1.7.0}"
virtctl_dir() { echo "$FERROVIRT_CACHE/kubevirt-v$VIRTCTL_VERSION"; }

_t0=$SECONDS
log() { printf '[%s +%4ss] %s\n' "$(basename "$0")" "$((SECONDS - _t0))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The local cluster of hack/local-up.sh: PKI, etcd data, logs, pid files, kubeconfig.
LOCAL_DIR="${FERROVIRT_LOCAL_DIR:-$FERROVIRT_ROOT/.ferrovirt}"
# Its helm release of deploy/helm/ferrovirt, and the helm it uses (hack/build-helm.sh).
RELEASE=ferrovirt
RELEASE_NAMESPACE=kubevirt
HELM_VERSION="${HELM_VERSION:-3.22.0}"

# start_bg NAME CMD...: runs CMD detached (its own session, working directory $LOCAL_DIR),
# logging to $LOCAL_DIR/logs/NAME.log, with its pid in $LOCAL_DIR/pids/NAME.pid.
# hack/local-down.sh stops every process that has a pid file there and runs in $LOCAL_DIR.
start_bg() {
  local name="$1"; shift
  mkdir -p "$LOCAL_DIR/logs" "$LOCAL_DIR/pids"
  (cd "$LOCAL_DIR" && exec setsid "$@" >>"$LOCAL_DIR/logs/$name.log" 2>&1 </dev/null) &
  echo "$!" >"$LOCAL_DIR/pids/$name.pid"
}

# Elapsed-time helper for summaries: `t=$(now)` ... `$(( $(now) - t ))`.
now() { date +%s; }

# ---- The real node (hack/build-node.sh, hack/node/, docs/real-node.md) ------------------
# Versions of what runs on it; kubelet and kube-proxy follow KUBE_VERSION.
CONTAINERD_VERSION="${CONTAINERD_VERSION:-2.4.2}"
CNI_PLUGINS_VERSION="${CNI_PLUGINS_VERSION:-1.10.0}"
CRI_TOOLS_VERSION="${CRI_TOOLS_VERSION:-1.37.0}"
REGISTRY_VERSION="${REGISTRY_VERSION:-3.1.2}"
CRANE_VERSION="${CRANE_VERSION:-0.22.1}"

# One versioned directory per piece, so a version bump rebuilds only that piece.
kube_node_dir() { echo "$FERROVIRT_CACHE/kube-node-v$KUBE_VERSION"; }
containerd_dir() { echo "$FERROVIRT_CACHE/containerd-v$CONTAINERD_VERSION"; }
cni_plugins_dir() { echo "$FERROVIRT_CACHE/cni-plugins-v$CNI_PLUGINS_VERSION"; }
cri_tools_dir() { echo "$FERROVIRT_CACHE/cri-tools-v$CRI_TOOLS_VERSION"; }
registry_dir() { echo "$FERROVIRT_CACHE/registry-v$REGISTRY_VERSION"; }
crane_dir() { echo "$FERROVIRT_CACHE/crane-v$CRANE_VERSION"; }
# OCI layout tars made offline: the pause (sandbox) image and a busybox test image.
node_images_dir() { echo "$FERROVIRT_CACHE/node-images"; }
# The sandbox image every pod starts with (built from hack/node/pause.c, pinned in containerd)
# and a busybox image the tests push to the node's registry.
PAUSE_IMAGE="ferrovirt.local/pause:1.0"
BUSYBOX_IMAGE="ferrovirt.local/busybox:1.35"

# stop_pidfile NAME FILE: stops the process whose pid FILE holds, if the caller's `ours PID`
# says it is one of its own (SIGTERM, SIGKILL after 10 s), and removes FILE.
stop_pidfile() {
  local name="$1" file="$2" pid
  [[ -f "$file" ]] || return 0
  pid="$(<"$file")"
  if [[ -n "$pid" ]] && ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do ours "$pid" || break; sleep 0.1; done
    if ours "$pid"; then
      log "$name ($pid) ignored SIGTERM for 10s: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name ($pid)"
  fi
  rm -f "$file"
}
