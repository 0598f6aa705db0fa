#!/usr/bin/env bash
# Smoke test of the guests built by hack/build-guest-images.sh, with plain QEMU (TCG):
# for each mode, boots the guest with a NoCloud disk, waits for the cloud-init, instance-id
# and ready lines, types a command on the serial console and checks its output, presses
# the ACPI power button (monitor system_powerdown) and expects QEMU to exit 0 after
# "reboot: Power down". The machine has the guest agent's virtio-serial port, as every
# Ferrovirt domain: qemu-ga must answer guest-get-osinfo with the kernel the console names
# (python3 speaks to its socket). Prints one line per mode with the times.
# Usage: hack/guest/smoke.sh [MODE...]   (default: kernel disk efi)
#   kernel   PVH vmlinux + initrd (-kernel), cidata ISO9660 on virtio-blk, #cloud-config
#   bzimage  Debian's bzImage + initrd (-kernel), cidata vfat on virtio-blk, #!/bin/sh
#   disk     disk.qcow2 on virtio-blk, SeaBIOS, cidata ISO9660 on a SATA CD-ROM, #!/bin/sh
#   sata     disk.qcow2 on SATA, SeaBIOS, cidata vfat on virtio-blk, #cloud-config
#   efi      disk.qcow2 on virtio-blk, OVMF, cidata ISO9660 on virtio-blk, #cloud-config
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

g="$FERROVIRT_CACHE/guests"
[[ -f "$g/STAMP" ]] || die "no guests in $g: run hack/build-guest-images.sh"
modes=("$@")
[[ ${#modes[@]} -gt 0 ]] || modes=(kernel disk efi)
timeout_s="${SMOKE_TIMEOUT:-180}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cidata() { # kind(iso|vfat) userdata-style(cloud-config|script) instance-id -> path
  local kind="$1" style="$2" iid="$3" d="$tmp/cidata.$3"
  mkdir -p "$d"
  if [[ "$style" == cloud-config ]]; then
    printf '#cloud-config\n# a comment\n\npassword: smoke-%s\nchpasswd: { expire: False }\n' "$iid" >"$d/user-data"
  else
    printf "#!/bin/sh\n\necho 'printed from cloud-init userdata'\n" >"$d/user-data"
  fi
  printf '{"instance-id": "%s", "local-hostname": "smoke"}\n' "$iid" >"$d/meta-data"
  if [[ "$kind" == iso ]]; then
    genisoimage -quiet -V cidata -J -r -o "$d.img" "$d/user-data" "$d/meta-data"
  else
    rm -f "$d.img"
    mkfs.vfat -n CIDATA -C "$d.img" 2048 >/dev/null
    MTOOLS_SKIP_CHECK=1 mcopy -i "$d.img" "$d/user-data" "$d/meta-data" ::/
  fi
  echo "$d.img"
}

expect() { # pattern: read console lines until one matches
  local line
  while IFS= read -r -t "$timeout_s" line <&"$out"; do
    printf '%s\n' "$line" >>"$log"
    [[ "$line" == *$1* ]] && return 0
  done
  return 1
}
# guest-get-osinfo's kernel-release, from the agent on socket $1 (waits up to 60 s for it).
agent_osinfo() {
  python3 - "$1" <<'EOF'
import json, socket, sys, time
deadline = time.time() + 60
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        s.settimeout(5)
        f = s.makefile("rw")
        f.write(json.dumps({"execute": "guest-sync", "arguments": {"id": 42}}) + "\n")
        f.flush()
        while json.loads(f.readline()).get("return") != 42:
            pass
        f.write(json.dumps({"execute": "guest-get-osinfo"}) + "\n")
        f.flush()
        print(json.loads(f.readline())["return"]["kernel-release"])
        break
    except (OSError, ValueError, KeyError):
        if time.time() > deadline:
            sys.exit(1)
        time.sleep(1)
EOF
}
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

fail=0
for mode in "${modes[@]}"; do
  log="$tmp/console.$mode"; mon="$tmp/mon.$mode"
  : >"$log"; mkfifo "$mon.in" "$mon.out"
  q=(qemu-system-x86_64 -accel tcg -M q35 -m 512 -smp 1 -nodefaults -display none -no-reboot
     -serial stdio -chardev "pipe,id=mon,path=$mon" -mon chardev=mon,mode=readline
     -device virtio-serial -chardev "socket,id=qga,path=$tmp/qga.$mode,server=on,wait=off"
     -device virtserialport,chardev=qga,name=org.qemu.guest_agent.0)
  disk=(-drive "file=$g/disk.qcow2,if=virtio,format=qcow2,snapshot=on")
  args="$(cat "$g/cmdline")"
  case "$mode" in
    kernel)  ci="$(cidata iso cloud-config "$mode")"
             q+=(-kernel "$g/vmlinux" -initrd "$g/initrd.img" -append "$args"
                 -drive "file=$ci,if=virtio,format=raw,readonly=on") ;;
    bzimage) ci="$(cidata vfat script "$mode")"
             q+=(-kernel "$g/vmlinuz" -initrd "$g/initrd.img" -append "$args"
                 -drive "file=$ci,if=virtio,format=raw,readonly=on") ;;
    disk)    ci="$(cidata iso script "$mode")"
             q+=("${disk[@]}" -drive "file=$ci,if=none,id=ci,format=raw,readonly=on,media=cdrom"
                 -device ide-cd,drive=ci) ;;
    sata)    ci="$(cidata vfat cloud-config "$mode")"
             q+=(-drive "file=$g/disk.qcow2,if=none,id=d0,format=qcow2,snapshot=on"
                 -device ide-hd,drive=d0,bootindex=0
                 -drive "file=$ci,if=virtio,format=raw,readonly=on") ;;
    efi)     ci="$(cidata iso cloud-config "$mode")"
             cp /usr/share/OVMF/OVMF_VARS_4M.fd "$tmp/vars.fd"
             q+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
                 -drive "if=pflash,format=raw,unit=1,file=$tmp/vars.fd"
                 "${disk[@]}" -drive "file=$ci,if=virtio,format=raw,readonly=on") ;;
    *) die "unknown mode $mode" ;;
  esac
  t0=$EPOCHREALTIME
  coproc QEMU { exec "${q[@]}" 2>&1; }
  pid=$QEMU_PID
  exec {out}<&"${QEMU[0]}" {in}>&"${QEMU[1]}"
  ok=1 why=""
  if [[ "$(sed -n 1p "$tmp/cidata.$mode/user-data")" == "#!"* ]]; then
    want_ci="FERROVIRT CLOUD-INIT: echo 'printed from cloud-init userdata'"
  else
    want_ci="FERROVIRT CLOUD-INIT: password: smoke-$mode"
  fi
  if ! expect "$want_ci"; then ok=0 why="no line '$want_ci'"
  elif ! expect "FERROVIRT INSTANCE-ID: $mode"; then ok=0 why="no instance-id line"
  elif ! expect "FERROVIRT GUEST READY"; then ok=0 why="no ready line"
  fi
  t_ready="$(elapsed "$t0")"
  if [[ "$ok" == 1 ]]; then
    sleep 1 # let the shell start
    printf 'echo smoke-$((6 * 7)) $(hostname); cat /run/boot-times\n' >&"$in"
    expect "smoke-42 smoke" || { ok=0 why="no command output on the console"; }
  fi
  if [[ "$ok" == 1 ]]; then
    printf 'echo kernel-$(uname -r)\n' >&"$in"
    expect "kernel-[0-9]" || true
    release="$(grep -a -o 'kernel-[0-9][^ ]*' "$log" | tail -n 1 | tr -d '\r')"
    agent_release="$(agent_osinfo "$tmp/qga.$mode" || true)"
    [[ -n "$release" && "kernel-$agent_release" == "$release" ]] \
      || { ok=0 why="guest agent: kernel-release '$agent_release', console '$release'"; }
  fi
  if [[ "$ok" == 1 ]]; then
    t1=$EPOCHREALTIME
    echo system_powerdown >"$mon.in"
    expect "reboot: Power down" || { ok=0 why="no 'reboot: Power down'"; }
  fi
  rc=0
  if [[ "$ok" == 1 ]]; then
    # QEMU exits by itself after the guest powers off.
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill "$pid" 2>/dev/null && { ok=0 why="QEMU still running after the poweroff"; }
    wait "$pid" || rc=$?
    [[ "$rc" == 0 ]] || { ok=0 why="QEMU exited $rc"; }
    t_off="$(elapsed "$t1")"
  else
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  exec {out}<&- {in}>&-
  boot_times="$(grep -a -m1 '^rcS-start' "$log" | tr -d '\r' || true)"
  if [[ "$ok" == 1 ]]; then
    echo "$mode: ok: ready ${t_ready}s, power off ${t_off}s; guest uptime: $boot_times"
  else
    echo "$mode: FAILED: $why (console below)"
    sed 's/^/  | /' "$log" | tail -n 40
    fail=1
  fi
done
exit "$fail"
