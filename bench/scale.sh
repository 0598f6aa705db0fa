#!/usr/bin/env bash
# Scale benchmark (issue 13, part 3): virt-controller with 1,000 and 10,000 VMs over 100
# nodes simulated by kwok against the real kube-apiserver, each beside the API server's own
# ceiling (a client creating the same VMs, VMIs and launcher pods itself, same
# concurrency), on a fresh control plane per run. Prints a markdown table and writes
# bench/scale/scale.svg (time and RSS against VMs). See bench/scale/README.md.
#
# Usage: bench/scale.sh [--record] [--sizes "1000 10000"] [--nodes 100] [--before BIN] [--after DIR] [--rounds N] [--load N]
#   --record      also append the tables to bench/README.md (with the date and machine load)
#   --before BIN  a same-round before/after: each round also runs BIN (a virt-controller
#                 built elsewhere, say at an older commit) between the ceiling and this
#                 tree's, and prints its table too. BIN may be a directory holding that
#                 build's virt-controller and bench-scale: its runs then use that tree's
#                 CRDs and admission policies too (needed when the CRDs changed between)
#   --after DIR   the "after" is DIR's virt-controller and bench-scale (say a build of a
#                 commit from `git archive`, away from a tree others edit) instead of a
#                 release build of this tree; the ceiling runs DIR's bench-scale too
#   --rounds N    N rounds of ceiling [, before], operator per size (default 1)
#   --load N      N busy loops (a core's worth each, at the benchmark's own priority) run
#                 through every run, ceiling and operator alike: "under load" the same way
#                 each time instead of whatever else the machine is doing (default 0)
# Takes about 15-25 minutes on 2 cores (after the builds: kwok ~4 min once, release ~3 min).
set -euo pipefail
source "$(dirname "$0")/../hack/lib.sh"

record=0 sizes="1000 10000" nodes=100 before="" after="" rounds=1 load=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --record) record=1; shift ;;
    --sizes) sizes="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --before) before=$(realpath "$2"); shift 2 ;;
    --after) after=$(realpath "$2"); shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --load) load="$2"; shift 2 ;;
    -h|--help) sed -n '2,23s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

KWOK_VERSION=0.8.0
kwok_dir="$FERROVIRT_CACHE/kwok-v$KWOK_VERSION"
if [[ ! -x "$kwok_dir/kwok" ]]; then
  log "building kwok v$KWOK_VERSION with Go into $kwok_dir (once per machine, a few minutes)"
  mkdir -p "$kwok_dir"
  GOBIN="$kwok_dir" CGO_ENABLED=0 go install -trimpath "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
fi
if [[ ! -s "$kwok_dir/stages.yaml" ]]; then
  # kwok's own "fast" stages, from its module source: Nodes initialised Ready with
  # heartbeats; bound pods Ready at once, completed pods kept, deleted pods removed.
  src=$(go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [[ -d "$src" ]] || die "go mod download sigs.k8s.io/kwok@v$KWOK_VERSION gave no source directory"
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    grep -v '^---$' "$src/kustomize/stage/$f"
  done >"$kwok_dir/stages.yaml"
fi

# kwok's own options, the same for the ceiling's runs and virt-controller's (bench-scale
# starts kwok with this file and stages.yaml, nothing else). A KwokConfiguration read from
# a file gets none of kwok's defaults (v0.8.0 converts it without defaulting: a missing
# parallelism is 0 and kwok exits), so every option is written here. The workers are
# raised from kwok's defaults (4 pod, 4 node, 4 lease, 1 pods-on-node sync): one kwok
# plays 100 kubelets, and with 4 pod workers a bound pod waited 7-10 s (p50) to be marked
# Running under virt-controller's API load, the slowest step of the profile
# (bench/README.md, 2026-12-03 14:51).
cat >"$kwok_dir/kwok.yaml" <<'YAML'
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
metadata:
  name: bench-scale
options:
  enableCRDs: []
  cidr: 10.244.0.0/16
  nodeIP: 127.0.0.1
  nodeName: ""
  nodePort: 0
  tlsCertFile: ""
  tlsPrivateKeyFile: ""
  manageSingleNode: ""
  manageAllNodes: false
  manageNodesWithAnnotationSelector: kwok.x-k8s.io/node=fake
  manageNodesWithLabelSelector: ""
  serverAddress: ""
  enableDebuggingHandlers: false
  enableContentionProfiling: false
  enableProfilingHandler: false
  podPlayStageParallelism: 32
  nodePlayStageParallelism: 16
  nodeLeaseDurationSeconds: 40
  nodeLeaseParallelism: 16
  podsOnNodeSyncParallelism: 4
  enablePodsOnNodeSyncListPager: true
  enablePodsOnNodeSyncStreamWatch: false
YAML

cd "$FERROVIRT_ROOT"
after_bin=()
if [[ -n "$after" ]]; then
  bench="$after/bench-scale" after_bin=(env "OPERATOR_BIN=$after/virt-controller")
  [[ -x "$bench" && -x "$after/virt-controller" ]] || die "--after directory needs virt-controller and bench-scale"
else
  log "building virt-controller and the benchmark (release)"
  cargo build --release -p virt-controller --bin virt-controller --example bench-scale
  bench="${CARGO_TARGET_DIR:-$FERROVIRT_ROOT/target}/release/examples/bench-scale"
fi

out=$(mktemp -d /tmp/bench-scale.XXXXXX)
log "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
busy=()
stop_busy() { [[ ${#busy[@]} -eq 0 ]] || kill "${busy[@]}" 2>/dev/null || true; }
trap stop_busy EXIT
if [[ "$load" -gt 0 ]]; then
  log "--load $load: $load busy loops through every run"
  for _ in $(seq 1 "$load"); do
    (while :; do :; done) &
    busy+=($!)
  done
fi
runs=("ceiling")
[[ -n "$before" ]] && runs+=("before")
runs+=("operator")
before_bench="$bench"
if [[ -d "$before" ]]; then
  before_bench="$before/bench-scale" before="$before/virt-controller"
  [[ -x "$before_bench" && -x "$before" ]] || die "--before directory needs virt-controller and bench-scale"
fi
for n in $sizes; do
  for r in $(seq 1 "$rounds"); do
    for run in "${runs[@]}"; do
      log "round $r, $run: $n VMs over $nodes kwok nodes (fresh control plane)"
      mode=$run bin=() exe=$bench
      if [[ "$run" == operator ]]; then bin=("${after_bin[@]}"); fi
      if [[ "$run" == before ]]; then mode=operator bin=(env "OPERATOR_BIN=$before") exe=$before_bench; fi
      "${bin[@]}" "$exe" run --mode "$mode" --vms "$n" --nodes "$nodes" \
        --json "$out/$run-$n-$r.json" >/dev/null
    done
  done
done

# One table per round and build: a row per size, each against its round's ceiling.
table=""
for r in $(seq 1 "$rounds"); do
  for run in "${runs[@]:1}"; do
    files=()
    for n in $sizes; do files+=("$out/ceiling-$n-$r.json" "$out/$run-$n-$r.json"); done
    label=$run
    [[ "$run" == operator && -n "$before" ]] && label="after (this tree)"
    rows=$("$bench" report --svg "$out/scale-$run-$r.svg" "${files[@]}")
    table+=$'\n'"Round $r, $label:"$'\n\n'"$rows"$'\n'
    [[ "$run" == operator && "$r" == "$rounds" ]] && cp "$out/scale-$run-$r.svg" "$FERROVIRT_ROOT/bench/scale/scale.svg"
  done
done
stop_busy
busy=()
echo "$table"
if [[ "$record" == 1 ]]; then
  {
    echo
    echo "### Scale, $(date -u +%Y-%m-%d) (load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores)"
    echo
    echo "bench/scale.sh: $nodes kwok nodes, --load $load; plot: bench/scale/scale.svg"
    echo "$table"
  } >>"$FERROVIRT_ROOT/bench/README.md"
  log "appended to bench/README.md"
fi
log "raw results in $out"
