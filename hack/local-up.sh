#!/usr/bin/env bash
# Starts a local Ferrovirt cluster on this machine, in .ferrovirt/ of the repo: the same
# control plane as the tests (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
# with the CRDs installed, running in the background with pid files in .ferrovirt/pids/.
# Prints the environment to use it; returns once it is ready. Stop it with hack/local-down.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
exec </dev/null
cd "$FERROVIRT_ROOT"

mkdir -p "$LOCAL_DIR"
log "control plane in $LOCAL_DIR"
env_lines="$(cargo run -q -p ferrovirt-tests --bin ferrovirt-local -- --dir "$LOCAL_DIR" up)" \
  || die "the control plane did not start; logs are in $LOCAL_DIR/logs/ (hack/local-down.sh cleans up)"

# ---- Ferrovirt's components ------------------------------------------------------------
# Later issues start devnode, the operator and virt-handler here, each with
#   start_bg NAME COMMAND...        (hack/lib.sh: log in .ferrovirt/logs, pid in .ferrovirt/pids)
# after `export KUBECONFIG="$LOCAL_DIR/kubeconfig"`, and wait for each to be ready.
# hack/local-down.sh stops everything that has a pid file.
# -----------------------------------------------------------------------------------------

log "ready; to use it:"
echo "$env_lines"
