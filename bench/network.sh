#!/usr/bin/env bash
# Pod networking figures (issue 10): TCP throughput between the guest and a peer of its
# pod in both directions (16 MiB, the median of 3), the peer's round trip to the pod's
# address (busybox ping, 20 echoes), and what the pod network costs before the domain
# starts, for the masquerade (over IPv4, and over IPv6 through NAT66), bridge and passt bindings (virt-handler's network code, the real
# launcher with its DHCP server or passt, libvirt, QEMU TCG).
# Runs virt-handler/tests/network/bench.rs (two network namespaces of its own, nothing
# leaves them; root, iproute2, nftables, passt, busybox-static, the test guest). Prints a
# table and appends it to bench/README.md with the date and the load. About 3 minutes.
#
#   bench/network.sh            # measure, print, append
#   bench/network.sh --no-record
set -euo pipefail
source "$(dirname "$0")/../hack/lib.sh"
cd "$FERROVIRT_ROOT"
record=1
if [[ "${1:-}" == "--no-record" ]]; then record=0; fi
command -v passt >/dev/null || die "passt missing: apt-get install passt"
log "building virt-launcher and the network test binary"
cargo build -q -p virt-launcher
load_before="$(cut -d' ' -f1 /proc/loadavg)"
out="$(mktemp)"
started=$SECONDS
log "booting three guests one after the other and measuring (about 3 minutes)"
cargo test -q -p virt-handler --test network bench_network -- --ignored --nocapture >"$out" 2>&1 \
  || { tail -40 "$out"; die "the benchmark failed (log: $out)"; }
log "done in $((SECONDS - started)) s"
table="$(
  echo "| binding | guest → peer Mbit/s | peer → guest Mbit/s | peer → pod IP RTT ms | network setup ms | start → ready line s | start → DHCP lease s |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  grep '^BENCH|' "$out" | cut -d'|' -f2- | sed 's/|/ | /g; s/^/| /; s/$/ |/'
)"
[[ $(grep -c '^BENCH|' "$out") -eq 4 ]] || { cat "$out"; die "expected four BENCH lines (masquerade over IPv4 and IPv6, bridge, passt)"; }
echo "$table"
if [[ $record -eq 1 ]]; then
  {
    echo
    echo "## Pod networking ($(date -u '+%Y-%m-%d %H:%M UTC'), load average $load_before before, $(cut -d' ' -f1 /proc/loadavg) after)"
    echo
    echo "\`bench/network.sh\`: 16 MiB each way (median of 3) between the TCG guest and a peer"
    echo "namespace joined to the pod's by a veth; passt with QEMU started directly (docs/networking.md)."
    echo "\"network setup\" is virt-handler preparing the pod's namespace (passt: until its socket exists),"
    echo "the only step it adds before the domain starts; the DHCP lease comes after the ready line."
    echo "With passt the pod's own kernel answers the peer's ping (passt forwards no inbound ICMP)."
    echo
    echo "$table"
  } >> bench/README.md
  log "appended to bench/README.md"
fi
rm -f "$out"
