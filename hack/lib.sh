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
