#!/usr/bin/env bash
# The test command: builds the workspace, checks formatting and clippy (warnings are errors),
# and runs every tier with `cargo test --workspace`:
# unit tests in each crate, integration tests against a real control plane (tests/tests/),
# and the end-to-end tests (tests/tests/e2e.rs). Prints a summary; exits non-zero on any failure,
# and when a test left a control-plane process behind.
# Usage: hack/test.sh [cargo test args instead of --workspace, e.g. -p ferrovirt-tests]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
exec </dev/null
cd "$FERROVIRT_ROOT"

cp_dir="$(control_plane_dir)"
for b in "${CONTROL_PLANE_BINARIES[@]}"; do
  [[ -x "$cp_dir/$b" ]] || die "$b missing in $cp_dir: run hack/setup.sh (or hack/build-control-plane.sh)"
done
# Where the tests find what they need.
export FERROVIRT_ROOT FERROVIRT_CACHE
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
# Property tests (proptest) run the same cases every time here, so a run is repeatable and
# main stays green; set PROPTEST_RNG_SEED to another number (or to one a failure printed)
# to explore or replay.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261202}"

t0=$(now)
log "cargo build --workspace --bins"
cargo build --workspace --bins || die "cargo build --workspace --bins failed: no test ran"
build_s=$(( $(now) - t0 ))

# Lints: formatting (rustfmt.toml), import cycles between modules, and clippy with warnings
# as errors. A finding fails the run, but the tests still run so one report says everything.
lint_failed=()
log "cargo fmt --all --check"
cargo fmt --all --check >&2 || lint_failed+=("cargo fmt --all --check (run: cargo fmt --all)")
log "hack/module-cycles.py (no import cycle between a crate's modules)"
python3 hack/module-cycles.py >&2 || lint_failed+=("hack/module-cycles.py (modules that import each other)")
log "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings \
  || lint_failed+=("cargo clippy --workspace --all-targets -- -D warnings")

out="$(mktemp -t ferrovirt-test-XXXXXX.log)"
t1=$(now)
# Arguments select what to test (cargo ignores -p next to --workspace).
[[ $# -gt 0 ]] || set -- --workspace
log "cargo test --no-fail-fast $*"
set +e
cargo test --no-fail-fast "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e
test_s=$(( $(now) - t1 ))

passed=0 failed=0 ignored=0 binaries=0
while read -r p f i; do
  passed=$((passed + p)); failed=$((failed + f)); ignored=$((ignored + i)); binaries=$((binaries + 1))
done < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$out")

# No test may leave a control plane or a pod running: the harness ties control planes to
# the test process (temp dir cp-<test pid>-<n>), and devnode's state dirs are
# /tmp/fv-<test pid>-… (the pod's container shims name their spec there), so a process
# naming the dir of a finished test is a leak. Those of test runs still going (another
# shell) are not.
leaked=()
while read -r pid args; do
  owner="$(sed -n -e 's|.*/ferrovirt-tests/cp-\([0-9]*\)-.*|\1|p' \
    -e 's|.*devnode shim /tmp/fv-\([0-9]*\)-.*|\1|p' <<<"$args" | head -1)"
  [[ -n "$owner" && ! -d "/proc/$owner" ]] && leaked+=("$pid")
done < <(pgrep -a -f "${TMPDIR:-/tmp}/ferrovirt-tests/cp-|devnode shim /tmp/fv-" || true)
# virt-handler's tests run launchers and their QEMUs from temp dirs /tmp/vh…, which the
# test removes when it ends; a QEMU or launcher naming a dir that no longer exists was left
# by a finished (or killed) test.
while read -r pid args; do
  dir="$(grep -o '/tmp/vh[A-Za-z0-9]*' <<<"$args" | head -1)"
  [[ -n "$dir" && ! -d "$dir" ]] && leaked+=("$pid")
done < <(pgrep -a -f '^[^ ]*(qemu-system|virt-launcher)[^ ]* .*/tmp/vh' || true)
if [[ ${#leaked[@]} -gt 0 ]]; then
  log "processes left running by finished tests:"
  ps -o pid,args -p "$(printf '%s,' "${leaked[@]}" | sed 's/,$//')" >&2 || true
  rc=1
fi

echo
echo "==== summary: $binaries test binaries, build ${build_s}s, tests ${test_s}s (log: $out)"
grep -E '^test .* FAILED$|^    [a-z_:]+$' "$out" | sed 's/^/  /' || true
if [[ $ignored -gt 0 ]]; then
  echo "$passed passed, $failed failed, $ignored skipped"
else
  echo "$passed passed, $failed failed"
fi
if [[ $rc -ne 0 && $failed -eq 0 ]]; then
  echo "cargo test exited with $rc (a build or harness failure, see above)"
  # A linker killed by a full disk says so only deep in its own output.
  if grep -q "No space left on device" "$out"; then
    echo "the disk filled up ($(df -P -h . | awk 'NR == 2 { print $4 }') free now in $(df -P . | awk 'NR == 2 { print $6 }')): free space (target/, the caches) and run again"
  fi
fi
if [[ ${#lint_failed[@]} -gt 0 ]]; then
  printf 'lint failed: %s\n' "${lint_failed[@]}"
  rc=1
fi
exit "$rc"
