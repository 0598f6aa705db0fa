#!/usr/bin/env bash
# Boots the Ferrovirt test guest with plain qemu-system-x86_64 (software emulation, no
# libvirt) N times and prints the median seconds from starting QEMU to the guest's
# "FERROVIRT GUEST READY" line on the serial console: the raw baseline of the benchmark.
#
# Usage: bench/raw-boot.sh [-n N] [-m MiB] [-M machine] [-a kernel-args] [-x qemu-args] [-p] [-v] [MODE...]
#   MODE   kernel  PVH vmlinux + initrd via -kernel (the kernel-boot images of the store)
#          bzimage bzImage (Debian's vmlinuz) + initrd via -kernel
#          disk    disk.qcow2 on virtio-blk, SeaBIOS + GRUB      (default: kernel disk)
#          efi     disk.qcow2 on virtio-blk, OVMF + GRUB
#   -n N   boots per mode (default 5)         -m MiB  guest memory (default 1024)
#   -M     machine type (default q35)          -a ARGS kernel arguments for kernel/bzimage
#          (default: the disk's, $FERROVIRT_CACHE/guests/cmdline)
#   -x ARGS more QEMU arguments, split at spaces (to time what libvirt adds one part at a
#          time, docs/boot-time.md)
#   -p     after the ready line, press the ACPI power button (monitor system_powerdown) and
#          also time the clean exit of QEMU (fails unless QEMU exits 0 with "Power down")
#   -v     print every run's time, and the console of failed runs
# Output: one line per mode, medians in seconds:
#   "<mode> median <s> min <s> max <s> n <N> cpu <s>" (+ " poweroff <s>" with -p)
# where cpu is QEMU's CPU time (user+system) at the ready line: on a loaded machine the
# wall-clock times grow, the CPU time much less.
# Runs guest images built by hack/build-guest-images.sh (it builds them when missing).
set -euo pipefail
source "$(dirname "$0")/../hack/lib.sh"

n=5 mem=1024 machine=q35 args="" extra="" powerdown=0 verbose=0
while getopts "n:m:M:a:x:pvh" o; do
  case "$o" in
    n) n="$OPTARG" ;; m) mem="$OPTARG" ;; M) machine="$OPTARG" ;; a) args="$OPTARG" ;;
    x) extra="$OPTARG" ;;
    p) powerdown=1 ;; v) verbose=1 ;;
    *) sed -n '2,26s/^# \{0,1\}//p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
modes=("$@")
[[ ${#modes[@]} -gt 0 ]] || modes=(kernel disk)

g="$FERROVIRT_CACHE/guests"
if [[ ! -f "$g/disk.qcow2" || ! -f "$g/vmlinux" ]]; then
  "$FERROVIRT_ROOT/hack/build-guest-images.sh" >&2
fi
[[ -n "$args" ]] || args="$(cat "$g/cmdline")"
ovmf=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
timeout_s="${RAW_BOOT_TIMEOUT:-120}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# One boot. Prints "<ready seconds> <qemu cpu seconds> [<poweroff seconds>]"; non-zero on failure.
boot_once() {
  local mode="$1" run="$2"
  local log="$tmp/console.$mode.$run" mon="$tmp/mon.$mode.$run"
  # The human monitor on a pair of FIFOs (QEMU's pipe chardev): plain bash can write to it.
  mkfifo "$mon.in" "$mon.out"
  local -a q=(qemu-system-x86_64 -accel tcg -M "$machine" -m "$mem" -smp 1
              -display none -serial stdio -monitor none -no-reboot -nodefaults
              -chardev "pipe,id=mon,path=$mon" -mon chardev=mon,mode=readline)
  # shellcheck disable=SC2206 # -x's arguments are split at spaces on purpose
  [[ -z "$extra" ]] || q+=($extra)
  case "$mode" in
    kernel)  q+=(-kernel "$g/vmlinux" -initrd "$g/initrd.img" -append "$args") ;;
    bzimage) q+=(-kernel "$g/vmlinuz" -initrd "$g/initrd.img" -append "$args") ;;
    disk)    q+=(-drive "file=$g/disk.qcow2,if=virtio,format=qcow2,snapshot=on") ;;
    efi)     cp "$ovmf_vars" "$tmp/vars.$run.fd"
             q+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$ovmf"
                 -drive "if=pflash,format=raw,unit=1,file=$tmp/vars.$run.fd"
                 -drive "file=$g/disk.qcow2,if=virtio,format=qcow2,snapshot=on") ;;
    *) die "unknown mode $mode" ;;
  esac
  local t0=$EPOCHREALTIME line ready="" cpu="" off="" rc=0
  coproc QEMU { exec "${q[@]}" 2>&1; }
  local pid=$QEMU_PID
  exec {out}<&"${QEMU[0]}"
  : >"$log"
  while IFS= read -r -t "$timeout_s" line <&$out; do
    printf '%s\n' "$line" >>"$log"
    if [[ -z "$ready" && "$line" == *"FERROVIRT GUEST READY"* ]]; then
      ready=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
      # QEMU's CPU time (user + system) so far: less sensitive to a busy machine.
      cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$pid/stat")
      [[ "$powerdown" == 1 ]] || break
      t0=$EPOCHREALTIME
      echo system_powerdown >"$mon.in"
    fi
  done
  if [[ "$powerdown" == 1 && -n "$ready" ]]; then
    wait "$pid" || rc=$?
    off=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
    if [[ "$rc" != 0 ]] || ! grep -q "reboot: Power down" "$log"; then
      [[ "$verbose" == 1 ]] && cat "$log" >&2
      log "$mode run $run: no clean poweroff (qemu exit $rc)"
      return 1
    fi
  else
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  exec {out}<&-
  if [[ -z "$ready" ]]; then
    [[ "$verbose" == 1 ]] && cat "$log" >&2
    log "$mode run $run: no ready line within ${timeout_s}s"
    return 1
  fi
  echo "$ready $cpu $off"
}

stats() { # values on stdin -> "median min max"
  sort -n | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.2f %.2f %.2f", m, v[1], v[NR] }'
}

for mode in "${modes[@]}"; do
  : >"$tmp/ready" ; : >"$tmp/cpu" ; : >"$tmp/off"
  for ((i = 1; i <= n; i++)); do
    r="$(boot_once "$mode" "$i")" || exit 1
    read -r rt ct ot <<<"$r"
    echo "$rt" >>"$tmp/ready"
    echo "$ct" >>"$tmp/cpu"
    [[ -n "${ot:-}" ]] && echo "$ot" >>"$tmp/off"
    [[ "$verbose" == 1 ]] && log "$mode run $i: ready ${rt}s (qemu cpu ${ct}s)${ot:+, poweroff ${ot}s}"
  done
  read -r med min max <<<"$(stats <"$tmp/ready")"
  read -r cmed _ _ <<<"$(stats <"$tmp/cpu")"
  extra=" cpu $cmed"
  if [[ -s "$tmp/off" ]]; then
    read -r omed _ _ <<<"$(stats <"$tmp/off")"
    extra+=" poweroff $omed"
  fi
  echo "$mode median $med min $min max $max n $n$extra"
done
