#!/usr/bin/env bash
# Node benchmark: `kubectl apply` to the guest's ready line against a raw QEMU boot of the
# same guest (interleaved, median and p90, ratio), and the per-VM memory of the launcher
# without QEMU with 1 and 10 VMs. Starts its own control plane and Ferrovirt stack
# (tests/examples/bench-node.rs); prints a markdown report.
#
# Usage: bench/node.sh [--debug] [--record] [-- bench-node flags]
#   --debug   use debug builds (what the tests run); default: release builds, fairer for RSS
#   --record  also append the report to bench/README.md
#   bench-node flags: --reps N (default 5), --vms N (default 10), --settle S (default 5),
#             --no-boot, --no-overhead
# Takes about 6-10 minutes on 2 cores with the defaults (after the build).
set -euo pipefail
source "$(dirname "$0")/../hack/lib.sh"

profile=release record=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --debug) profile=debug; shift ;;
    --record) record=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,13s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) break ;;
  esac
done

cd "$FERROVIRT_ROOT"
flags=()
[[ "$profile" == release ]] && flags=(--release)
log "building the components and the benchmark ($profile)"
cargo build "${flags[@]}" --workspace --bins
cargo build "${flags[@]}" -p ferrovirt-tests --example bench-node

g="$FERROVIRT_CACHE/images/index.tsv"
[[ -f "$g" ]] || "$FERROVIRT_ROOT/hack/build-guest-images.sh" >&2

target="${CARGO_TARGET_DIR:-$FERROVIRT_ROOT/target}/$profile"
extra=()
[[ "$record" == 1 ]] && extra=(--append "$FERROVIRT_ROOT/bench/README.md")
log "running $target/examples/bench-node $* ${extra[*]}"
FERROVIRT_BIN_DIR="$target" exec "$target/examples/bench-node" "$@" "${extra[@]}"
