#!/usr/bin/env bash
# Starts a local Ferrovirt cluster on this machine, in .ferrovirt/ of the repo, the way a
# user runs Ferrovirt on a real cluster:
#   1. the same control plane as the tests (etcd, kube-apiserver, kube-controller-manager,
#      kube-scheduler), in the background with pid files in .ferrovirt/pids/;
#   2. a real node, ferrovirt-node (hack/node/up.sh, docs/real-node.md): kubelet, containerd
#      and kube-proxy in a network namespace at 10.250.0.2, with an image registry at
#      10.250.0.1:5000 (hack/build-node.sh builds it);
#   3. Ferrovirt's four images and the guests' containerDisks built and pushed to that
#      registry (hack/build-images.sh, docs/images.md);
#   4. `helm install` of deploy/helm/ferrovirt with software emulation allowed, waiting
#      until every pod is Ready and virt-api's APIServices are Available.
# Prints the environment to use it (KUBECONFIG, PATH with kubectl, helm, KubeVirt's virtctl
# and ferroctl); returns once it is ready. Idempotent: what runs is kept, the release is
# upgraded. Stop it with hack/local-down.sh.
#
# Usage: hack/local-up.sh [--dev] [--demo]
#   --dev   the fast loop for Ferrovirt's own development: no images, no helm; the CRDs and
#           policies installed by the harness, and devnode (this machine as a Node),
#           virt-controller, virt-handler and virt-api run on the host from target/debug
#           (restart them by running local-up again after local-down). The real node runs
#           beside devnode, but VMs go to devnode. One mode at a time: the two would run two
#           virt-controllers on one cluster.
#   --demo  also apply deploy/examples/vm-demo.yaml and print the guest's first console lines.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
exec </dev/null
cd "$FERROVIRT_ROOT"

mode=helm demo=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dev) mode=dev; shift ;;
    --demo) demo=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

mkdir -p "$LOCAL_DIR"
# A cluster keeps its mode (etcd holds what the mode installed): the harness's CRDs and
# policies in --dev mode, the chart's in the default mode, which helm will not take over.
old_mode="$(cat "$LOCAL_DIR/mode" 2>/dev/null || { [[ -d "$LOCAL_DIR/etcd" ]] && echo dev; } || true)"
if [[ -n "$old_mode" && "$old_mode" != "$mode" ]]; then
  flag=""; [[ $old_mode == dev ]] && flag=" --dev"
  die "$LOCAL_DIR holds a cluster made by hack/local-up.sh$flag: remove it first with hack/local-down.sh --purge (its VMs go too)"
fi
echo "$mode" >"$LOCAL_DIR/mode"

t=$(now)
log "building Ferrovirt's binaries (cargo build --workspace --bins)"
cargo build -q --workspace --bins || die "cargo build failed"
bin="${CARGO_TARGET_DIR:-$FERROVIRT_ROOT/target}/debug"
log "  built in $(( $(now) - t ))s"

t=$(now)
log "control plane in $LOCAL_DIR"
up_args=(up)
[[ $mode == helm ]] && up_args+=(--bare)
env_lines="$("$bin/ferrovirt-local" --dir "$LOCAL_DIR" "${up_args[@]}")" \
  || die "the control plane did not start; logs are in $LOCAL_DIR/logs/ (hack/local-down.sh cleans up)"
t_cp=$(( $(now) - t ))
log "  control plane up in ${t_cp}s"

# ---- the real node ----------------------------------------------------------------------
t=$(now)
log "real node ferrovirt-node in $LOCAL_DIR/node (hack/node/up.sh)"
"$FERROVIRT_ROOT/hack/node/up.sh" --dir "$LOCAL_DIR/node" --kubeconfig "$LOCAL_DIR/kubeconfig" \
  --pki "$LOCAL_DIR/pki" --name ferrovirt-node --index 0 \
  || die "the real node did not start; logs are in $LOCAL_DIR/node/logs/ (hack/local-down.sh cleans up)"
t_node=$(( $(now) - t ))
log "  node Ready in ${t_node}s"

export KUBECONFIG="$LOCAL_DIR/kubeconfig"
kubectl="$(control_plane_dir)/kubectl"
helm="$FERROVIRT_CACHE/helm-v$HELM_VERSION/helm"
virtctl="$(virtctl_dir)/virtctl"
[[ -x "$virtctl" ]] || log "warning: KubeVirt's virtctl is missing at $virtctl: run hack/build-virtctl.sh"
holder() { cat "$LOCAL_DIR/node/pids/holder.pid"; }

# ---- Ferrovirt: helm install from its own images (the default) ----------------------------
if [[ $mode == helm ]]; then
  [[ -x "$helm" ]] || die "helm is missing at $helm: run hack/build-helm.sh (hack/setup.sh does)"
  t=$(now)
  log "images: Ferrovirt's four and the guests' containerDisks, to 10.250.0.1:5000 (hack/build-images.sh)"
  "$FERROVIRT_ROOT/hack/build-images.sh" --registry 10.250.0.1:5000 \
    || die "hack/build-images.sh failed"
  t_images=$(( $(now) - t ))
  log "  images pushed in ${t_images}s"
  # The tag hack/build-images.sh pushed for this checkout.
  revision="$(git rev-parse HEAD)"
  tag="git-${revision:0:12}"
  [[ -z "$(git status --porcelain)" ]] || tag+="-dirty"

  t=$(now)
  log "helm upgrade --install $RELEASE deploy/helm/ferrovirt -n $RELEASE_NAMESPACE (emulation on, images :$tag)"
  "$helm" upgrade --install "$RELEASE" deploy/helm/ferrovirt -n "$RELEASE_NAMESPACE" --create-namespace \
    --set emulation=true --set image.registry=10.250.0.1:5000 --set "image.tag=$tag" \
    >"$LOCAL_DIR/logs/helm.log" 2>&1 \
    || die "helm install failed: $(grep -v 'symbolic link' "$LOCAL_DIR/logs/helm.log" | tail -5)"
  # Every pod of the release Ready and both APIServices Available, with a line whenever
  # the picture changes.
  last=""
  while :; do
    pods="$("$kubectl" get pods -n "$RELEASE_NAMESPACE" -l kubevirt.io --no-headers \
      -o custom-columns=NAME:.metadata.name,READY:.status.conditions[?\(@.type==\"Ready\"\)].status,PHASE:.status.phase 2>/dev/null || true)"
    total="$(grep -c . <<<"$pods" || true)"
    ready="$(awk '$2 == "True"' <<<"$pods" | grep -c . || true)"
    apis="$("$kubectl" get apiservice v1.subresources.kubevirt.io v1alpha3.subresources.kubevirt.io \
      -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Available")].status}{" "}{end}' 2>/dev/null || true)"
    waiting="$(awk '$2 != "True" {print $1 " (" $3 ")"}' <<<"$pods" | tr '\n' ' ')"
    line="pods Ready $ready/$total${waiting:+; waiting for $waiting}; APIServices Available: ${apis:-none}"
    [[ "$line" != "$last" ]] && log "  $line"
    last="$line"
    # virt-controller 2, virt-api 2, virt-handler 1 per node (the chart's defaults).
    [[ $total -ge 5 && $ready -eq $total && "$apis" == "True True " ]] && break
    (( $(now) - t < 300 )) || die "Ferrovirt's pods are not Ready after 300s: kubectl -n $RELEASE_NAMESPACE get pods; kubectl -n $RELEASE_NAMESPACE describe pods"
    sleep 2
  done
  t_helm=$(( $(now) - t ))
  log "  helm install to every pod Ready: ${t_helm}s"
  run_dir=/var/run/ferrovirt # the chart's nodeRunDir, inside the node
  node=ferrovirt-node
  # The guest's serial log, in the node's mount namespace.
  serial_log() { nsenter -t "$(holder)" -m -- cat "$run_dir/vmis/$1/serial0.log" 2>/dev/null; }
fi

# ---- --dev: Ferrovirt's components on the host, devnode as the node ----------------------
if [[ $mode == dev ]]; then
  run_dir="${FERROVIRT_RUN_DIR:-/var/run/ferrovirt}"
  node="${FERROVIRT_NODE_NAME:-$(hostname)}"
  node="${node,,}"
  "$kubectl" apply -f deploy/examples/kubevirt-config.yaml >/dev/null
  # devnode, the QEMU capabilities cache (as the chart's virt-handler init container fills
  # it), virt-controller and virt-handler: the commands the tests' devnode stacks start
  # (tests/src/stack.rs), each unless it already runs.
  log "starting devnode (node $node), virt-controller and virt-handler (probes KVM first)"
  "$bin/ferrovirt-local" --dir "$LOCAL_DIR" node --name "$node" --run-dir "$run_dir" \
    || die "starting the node's components failed; see $LOCAL_DIR/logs"
  log "virt-api: deploy/rbac, APIServices, admission webhooks, waiting until they answer"
  "$bin/ferrovirt-local" --dir "$LOCAL_DIR" virt-api \
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
  serial_log() { cat "$run_dir/vmis/$1/serial0.log" 2>/dev/null; }
fi

if [[ $demo -eq 1 ]]; then
  log "demo: applying deploy/examples/vm-demo.yaml"
  "$kubectl" apply -f deploy/examples/vm-demo.yaml >&2
  t0=$(now)
  uid=""
  while [[ -z "$uid" ]] || ! serial_log "$uid" | grep -q "FERROVIRT GUEST READY"; do
    (( $(now) - t0 < 240 )) || die "the demo VM did not boot in 240s (kubectl describe vmi demo)"
    phase="$("$kubectl" get vmi demo -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    uid="$("$kubectl" get vmi demo -o jsonpath='{.metadata.uid}' 2>/dev/null || true)"
    log "demo VMI: ${phase:-not created yet}"
    sleep 2
  done
  log "demo VM booted in $(( $(now) - t0 ))s on node $node; its first console lines:"
  serial_log "$uid" | grep -a "FERROVIRT" | head -5 >&2
  "$kubectl" get vm,vmi >&2
fi
# -----------------------------------------------------------------------------------------

if [[ $mode == helm ]]; then
  log "ready in ${SECONDS}s (control plane ${t_cp}s, node ${t_node}s, images ${t_images}s, helm install to Ready ${t_helm}s); to use it:"
else
  log "ready in ${SECONDS}s (--dev: Ferrovirt on the host, VMs on devnode $node); to use it:"
fi
echo "$env_lines"
echo "export PATH=$(dirname "$helm"):$(virtctl_dir):$bin:\$PATH"
echo "# real node ferrovirt-node: registry 10.250.0.1:5000 (plain HTTP); enter it with"
echo "#   nsenter -t \$(cat $LOCAL_DIR/node/pids/holder.pid) -n -m -- <command>"
