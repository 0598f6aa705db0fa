#!/usr/bin/env bash
# Starts a local Ferrovirt cluster on this machine, in .ferrovirt/ of the repo: the same
# control plane as the tests (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
# with the CRDs and the admission policies of deploy/policies/ installed (re-applied when it
# is already running), in the background with pid files in .ferrovirt/pids/.
# Then Ferrovirt on top: devnode (this machine as the Node), virt-controller and virt-handler,
# with software emulation allowed (deploy/examples/kubevirt-config.yaml), and virt-api
# registered as the aggregated server of subresources.kubevirt.io (APIServices on
# 127.0.0.1:18445) with the RBAC of deploy/rbac/ installed, so `ferroctl start|stop|restart`
# and KubeVirt's own `virtctl` (hack/build-virtctl.sh) work against it.
# Beside devnode, a real node (hack/node/up.sh, docs/real-node.md): kubelet, containerd and
# kube-proxy named ferrovirt-node in a network namespace at 10.250.0.2, with an image
# registry at 10.250.0.1:5000; pods from images run there (hack/build-node.sh builds it).
# Prints the environment to use it; returns once it is ready. Stop it with hack/local-down.sh.
# --demo also applies deploy/examples/vm-demo.yaml and prints the guest's first console lines.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
exec </dev/null
cd "$FERROVIRT_ROOT"

demo=0
[[ "${1:-}" == "--demo" ]] && demo=1

mkdir -p "$LOCAL_DIR"
log "building Ferrovirt's binaries (cargo build --workspace --bins)"
cargo build -q --workspace --bins || die "cargo build failed"
bin="${CARGO_TARGET_DIR:-$FERROVIRT_ROOT/target}/debug"
[[ -f "$FERROVIRT_CACHE/images/index.tsv" ]] || die "no guest image store: run hack/setup.sh (or hack/build-guest-images.sh)"
log "control plane in $LOCAL_DIR"
env_lines="$(cargo run -q -p ferrovirt-tests --bin ferrovirt-local -- --dir "$LOCAL_DIR" up)" \
  || die "the control plane did not start; logs are in $LOCAL_DIR/logs/ (hack/local-down.sh cleans up)"

# ---- the real node ----------------------------------------------------------------------
log "real node ferrovirt-node in $LOCAL_DIR/node (hack/node/up.sh)"
"$FERROVIRT_ROOT/hack/node/up.sh" --dir "$LOCAL_DIR/node" --kubeconfig "$LOCAL_DIR/kubeconfig" \
  --pki "$LOCAL_DIR/pki" --name ferrovirt-node --index 0 \
  || die "the real node did not start; logs are in $LOCAL_DIR/node/logs/ (hack/local-down.sh cleans up)"

# ---- Ferrovirt's components ------------------------------------------------------------
export KUBECONFIG="$LOCAL_DIR/kubeconfig"
kubectl="$(control_plane_dir)/kubectl"
run_dir="${FERROVIRT_RUN_DIR:-/var/run/ferrovirt}"
node="${FERROVIRT_NODE_NAME:-$(hostname)}"
node="${node,,}"
"$kubectl" apply -f deploy/examples/kubevirt-config.yaml >/dev/null
running() { [[ -f "$LOCAL_DIR/pids/$1.pid" ]] && kill -0 "$(<"$LOCAL_DIR/pids/$1.pid")" 2>/dev/null; }
if ! running devnode; then
  log "starting devnode (node $node)"
  start_bg devnode "$bin/devnode" --node-name "$node" --state-dir "$LOCAL_DIR/devnode"
fi
if ! running virt-controller; then
  log "starting virt-controller (the VM and VMI controllers)"
  start_bg virt-controller "$bin/virt-controller" --node-run-dir "$run_dir" --metrics-addr 127.0.0.1:18443
fi
if ! running virt-handler; then
  log "starting virt-handler (probes KVM first)"
  start_bg virt-handler "$bin/virt-handler" --node-name "$node" --run-dir "$run_dir" \
    --namespace kubevirt --metrics-addr 127.0.0.1:18444 \
    --server-listen 127.0.0.1:18186
fi
log "virt-api: deploy/rbac, APIServices, admission webhooks, waiting until they answer"
cargo run -q -p ferrovirt-tests --bin ferrovirt-local -- --dir "$LOCAL_DIR" virt-api \
  || die "virt-api did not become Available; see $LOCAL_DIR/logs/virt-api.log"
# ferrovirt-local also registers virt-api's admission webhooks once it is Available (their
# failurePolicy is Fail: from then on VM and VMI writes need virt-api running).
log "waiting for node $node to be Ready"
for _ in $(seq 1 60); do
  "$kubectl" wait --for=condition=Ready "node/$node" --timeout=1s >/dev/null 2>&1 && break
  sleep 1
done
"$kubectl" wait --for=condition=Ready "node/$node" --timeout=1s >/dev/null \
  || die "node $node is not Ready; see $LOCAL_DIR/logs/devnode.log"

if [[ $demo -eq 1 ]]; then
  log "demo: applying deploy/examples/vm-demo.yaml"
  "$kubectl" apply -f deploy/examples/vm-demo.yaml >&2
  t0=$(now)
  uid=""
  while [[ -z "$uid" || ! -f "$run_dir/vmis/$uid/serial0.log" ]] \
      || ! grep -q "FERROVIRT GUEST READY" "$run_dir/vmis/$uid/serial0.log"; do
    (( $(now) - t0 < 240 )) || die "the demo VM did not boot in 240s; see $LOCAL_DIR/logs/"
    phase="$("$kubectl" get vmi demo -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    uid="$("$kubectl" get vmi demo -o jsonpath='{.metadata.uid}' 2>/dev/null || true)"
    log "demo VMI: ${phase:-not created yet}"
    sleep 2
  done
  log "demo VM booted in $(( $(now) - t0 ))s; its first console lines:"
  grep -a "FERROVIRT" "$run_dir/vmis/$uid/serial0.log" | head -5 >&2
  "$kubectl" get vm,vmi >&2
fi
# -----------------------------------------------------------------------------------------

log "ready; to use it:"
echo "$env_lines"
echo "# real node ferrovirt-node: registry 10.250.0.1:5000 (plain HTTP); enter it with"
echo "#   nsenter -t \$(cat $LOCAL_DIR/node/pids/holder.pid) -n -m -- <command>"
