#!/usr/bin/env bash
# The chaos soak (issue 12): a local control plane, devnode, two virt-controllers and
# virt-handler with VMs of mixed runStrategy; every cycle SIGKILLs one seeded-random target
# (virt-controller leader or standby, virt-handler, devnode, a launcher, a QEMU,
# kube-apiserver, etcd) or powers a guest off, restarts it as a supervisor would, waits for
# the cluster to settle and counts violations. Prints the report (a Markdown table); exits 1
# when anything was violated. About 40 s a cycle on 2 cores.
#
#   bench/chaos.sh                         # 50 cycles, 10 VMs, seed from the clock
#   bench/chaos.sh --cycles 10 --seed 7    # a shorter, repeatable run
#   bench/chaos.sh --record ...            # ... and append the report to bench/README.md
set -euo pipefail
source "$(dirname "$0")/../hack/lib.sh"
cd "$FERROVIRT_ROOT"
record=0
if [[ "${1:-}" == "--record" ]]; then record=1; shift; fi
log "building the workspace's binaries and the soak"
cargo build -q --workspace --bins
out="$(mktemp)"
rc=0
cargo run -q -p ferrovirt-chaos -- "$@" | tee "$out" || rc=$?
if [[ $record -eq 1 ]]; then
  { echo; echo "## Chaos soak ($(date -u +%Y-%m-%d))"; echo; cat "$out"; } >> bench/README.md
  log "appended to bench/README.md"
fi
rm -f "$out"
exit "$rc"
