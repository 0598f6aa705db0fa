#!/usr/bin/env bash
# Builds the Ferrovirt test guests offline from Debian packages and fills the image store.
#   $FERROVIRT_CACHE/guests/   vmlinuz (Debian's bzImage), vmlinux (the same unpacked: PVH ELF),
#                              initrd.img (busybox + modules), disk.qcow2 (MBR disk, GRUB for
#                              BIOS and, when grub-efi-amd64-bin is installed, UEFI),
#                              cmdline (kernel arguments the disk uses), STAMP
#                              initrd.img carries Debian's qemu-guest-agent (qemu-ga and the
#                              shared libraries it links) as a second archive, which the disk
#                              keeps apart (/boot/agent.img, unpacked by rcS after the ready
#                              line: GRUB's firmware reads cost seconds under TCG); rcS
#                              starts it on the agent's virtio-serial port (docs/guests.md,
#                              docs/guest-agent.md).
#   $FERROVIRT_CACHE/images/   image store (docs/contracts.md "Image store") + index.tsv
# Rebuilds the guests only when an input changed (this script, hack/guest/*, the kernel,
# busybox or GRUB); the image store is relinked on every run (cheap). See docs/guests.md.
# Usage: hack/build-guest-images.sh [--force]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# Bump when the layout or the contract of the guests changes.
GUEST_FORMAT=2
# The disk's filesystem label: GRUB finds its files by it, whatever the disk order.
DISK_LABEL=FVGUEST
# Kernel arguments baked into the disk's GRUB config. tty0 first, ttyS0 last: the serial
# port is /dev/console, and VNC shows the kernel too.
# quiet: under TCG every console byte costs; cryptomgr.notests: the crypto self-tests take
# over a second of emulated CPU. (measured: docs/guests.md)
DISK_CMDLINE="console=tty0 console=ttyS0 quiet cryptomgr.notests"

force=0
[[ "${1:-}" == "--force" ]] && force=1

guests="$FERROVIRT_CACHE/guests"
images="$FERROVIRT_CACHE/images"
src="$FERROVIRT_ROOT/hack/guest"
self="$FERROVIRT_ROOT/hack/build-guest-images.sh"
examples="${FERROVIRT_EXAMPLES:-$FERROVIRT_ROOT/../shared/kubevirt-examples}"
grub_pc=/usr/lib/grub/i386-pc
grub_efi=/usr/lib/grub/x86_64-efi

# ---- inputs -------------------------------------------------------------------------------
kernel="${FERROVIRT_GUEST_KERNEL:-}"
if [[ -z "$kernel" ]]; then
  kernel="$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)"
fi
[[ -n "$kernel" && -f "$kernel" ]] || die "no kernel in /boot: install linux-image-amd64"
kver="${kernel##*/vmlinuz-}"
moddir="/lib/modules/$kver"
[[ -f "$moddir/modules.dep" ]] || die "$moddir/modules.dep missing for kernel $kernel"

busybox=/bin/busybox
[[ -x "$busybox" ]] || die "$busybox missing: install busybox-static"
# Debian's QEMU guest agent, copied with the libraries it links (ldd) into the initramfs.
qemu_ga=/usr/sbin/qemu-ga
[[ -x "$qemu_ga" ]] || die "$qemu_ga missing: install qemu-guest-agent (hack/setup.sh)"
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked: install busybox-static (not busybox)"
fi
for t in cpio gzip xz mkfs.vfat mcopy mmd qemu-img grub-mkimage; do
  command -v "$t" >/dev/null || die "$t not found: run hack/setup.sh (cpio xz-utils dosfstools mtools qemu-utils grub-common)"
done
[[ -f "$grub_pc/boot.img" ]] || die "$grub_pc missing: install grub-pc-bin"
efi=0
[[ -f "$grub_efi/linux.mod" ]] && efi=1

# The files of hack/guest/ that go into the guest (smoke.sh does not); dhcp6c.c is built
# static (busybox has no DHCPv6 client).
guest_files=(rcS inittab profile udhcpc.script modules.list dhcp6c.c)
command -v gcc >/dev/null || die "gcc not found (Debian: gcc, libc6-dev): it builds the guest's dhcp6c"

pkg_versions() {
  dpkg-query -W -f='${Package} ${Version}\n' busybox-static grub-pc-bin grub-efi-amd64-bin grub-common qemu-guest-agent 2>/dev/null || true
}
stamp="$(
  {
    echo "format $GUEST_FORMAT label $DISK_LABEL cmdline $DISK_CMDLINE efi $efi"
    sha256sum "$self"
    (cd "$src" && sha256sum "${guest_files[@]}")
    stat -c '%n %s %Y' "$kernel" "$moddir/modules.dep" "$busybox" "$qemu_ga"
    pkg_versions
  } | sha256sum | cut -c1-16
)"

# ---- guest build --------------------------------------------------------------------------
mkdir -p "$guests" "$images"

# A newc cpio archive holding dev/ and dev/console (char 5:1), written without mknod so that
# the build needs no privilege: the kernel opens /dev/console for init before anything can
# mount devtmpfs. The kernel accepts concatenated archives.
cpio_newc_entry() { # name mode rdevmajor rdevminor inode
  local name="$1" mode="$2" maj="$3" min="$4" ino="$5"
  local namesize=$(( ${#name} + 1 ))
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
    "$ino" "$mode" 0 0 1 0 0 0 0 "$maj" "$min" "$namesize" 0 "$name"
  local pad=$(( (4 - (110 + namesize) % 4) % 4 ))
  head -c "$pad" /dev/zero
}
console_cpio() {
  cpio_newc_entry dev $((0040755)) 0 0 1
  cpio_newc_entry dev/console $((0020600)) 5 1 2
  cpio_newc_entry TRAILER!!! 0 0 0 0
}

# Resolve modules.list into an ordered load list, dependencies first.
declare -A mod_path=() mod_params=() mod_seen=()
load_order=()
index_modules() {
  local line rel base
  while IFS= read -r line; do
    rel="${line%%:*}"
    base="${rel##*/}"; base="${base%%.ko*}"; base="${base//-/_}"
    mod_path[$base]="$rel"
  done <"$moddir/modules.dep"
}
deps_of() { # relative path -> its dependencies (relative paths)
  awk -F: -v m="$1" '$1 == m { print $2; exit }' "$moddir/modules.dep"
}
add_module() { # relative path
  local rel="$1" d
  [[ -n "${mod_seen[$rel]:-}" ]] && return 0
  mod_seen[$rel]=1
  for d in $(deps_of "$rel"); do add_module "$d"; done
  load_order+=("$rel")
}
build_initrd() { # out (without the agent)
  local out="$1" root="$work/initrd"
  rm -rf "$root"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,proc,sys,dev,run,tmp,root,mnt,lib/modules,usr/share/udhcpc}
  cp "$busybox" "$root/bin/busybox"
  local applet
  while read -r applet; do
    [[ "$applet" == bin/busybox ]] && continue
    ln -sf /bin/busybox "$root/$applet"
  done < <("$busybox" --list-full)
  ln -sf /bin/busybox "$root/init"
  install -m 0755 "$src/rcS" "$root/etc/init.d/rcS"
  install -m 0644 "$src/inittab" "$root/etc/inittab"
  install -m 0644 "$src/profile" "$root/etc/profile"
  install -m 0755 "$src/udhcpc.script" "$root/usr/share/udhcpc/default.script"
  gcc -static -Os -s -o "$root/sbin/dhcp6c" "$src/dhcp6c.c" || die "building dhcp6c.c failed"
  echo ferrovirt >"$root/etc/hostname"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  echo "ferrovirt-guest format=$GUEST_FORMAT stamp=$stamp kernel=$kver" >"$root/etc/ferrovirt-release"
  # What the guest agent reports as the OS (guest-get-osinfo reads os-release).
  { echo "ID=ferrovirt"
    echo "NAME=\"Ferrovirt test guest\""
    echo "PRETTY_NAME=\"Ferrovirt test guest $GUEST_FORMAT (busybox, Debian kernel $kver)\""
    echo "VERSION=\"$GUEST_FORMAT ($stamp)\""
    echo "VERSION_ID=$GUEST_FORMAT"
  } >"$root/etc/os-release"
  # glibc's utmp is /var/run/utmp: the console login's record is what guest-get-users reads.
  mkdir -p "$root/var"
  ln -s /run "$root/var/run"

  index_modules
  local name params rel stage=""
  declare -A stage_modules=([boot]="" [late]="")
  while read -r name params; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    if [[ "$name" =~ ^\[(boot|late)\]$ ]]; then stage="${BASH_REMATCH[1]}"; continue; fi
    [[ -n "$stage" ]] || die "modules.list: module $name before a [boot] or [late] line"
    name="${name//-/_}"
    rel="${mod_path[$name]:-}"
    if [[ -z "$rel" ]]; then
      if grep -q "/$name.ko" "$moddir/modules.builtin" 2>/dev/null \
        || grep -q "/${name//_/-}.ko" "$moddir/modules.builtin" 2>/dev/null; then
        continue # built into this kernel
      fi
      die "module $name not found for kernel $kver"
    fi
    [[ -n "$params" ]] && mod_params[$name]="$params"
    stage_modules[$stage]+="$name "
    add_module "$rel"
  done <"$src/modules.list"

  # The modules keep their place under /lib/modules/<version>/ with a modules.dep of their
  # own, so that one busybox modprobe process loads them all (an insmod per module costs a
  # fork and an exec each, slow under TCG).
  local mroot="$root/lib/modules/$kver" base file dep deps
  mkdir -p "$mroot" "$root/etc/modprobe.d"
  : >"$mroot/modules.dep"
  for rel in "${load_order[@]}"; do
    base="${rel%%.ko*}.ko"
    file="$mroot/$base"
    mkdir -p "$(dirname "$file")"
    case "$rel" in
      *.ko) cp "$moddir/$rel" "$file" ;;
      *.ko.xz) xz -dc "$moddir/$rel" >"$file" ;;
      *.ko.zst) command -v zstd >/dev/null || die "zstd needed to unpack $rel"; zstd -qdc "$moddir/$rel" >"$file" ;;
      *.ko.gz) gzip -dc "$moddir/$rel" >"$file" ;;
      *) die "unknown module file $rel" ;;
    esac
    deps=""
    for dep in $(deps_of "$rel"); do deps+=" ${dep%%.ko*}.ko"; done
    echo "$base:$deps" >>"$mroot/modules.dep"
  done
  for name in "${!mod_params[@]}"; do
    echo "options $name ${mod_params[$name]}" >>"$root/etc/modprobe.d/ferrovirt.conf"
  done
  echo "${stage_modules[boot]}" >"$root/etc/modules.boot"
  echo "${stage_modules[late]}" >"$root/etc/modules.late"
  log "initramfs: busybox $("$busybox" | head -n1 | awk '{print $2}'), ${#load_order[@]} modules of $kver"

  { console_cpio
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0)
  } | gzip -9 -n >"$out"
}

# qemu-ga and every shared library it links (resolved by ldd, symbolic links followed), at
# the paths the dynamic linker looks them up, as a newc archive of its own, uncompressed:
# the kernel unpacks concatenated archives (gunzip of these 6 MiB would cost about 0.3 s of
# emulated CPU at every boot), and rcS unpacks it from the disk (busybox cpio).
build_agent() { # out
  local out="$1" root="$work/agent" lib
  rm -rf "$root"
  mkdir -p "$root"
  install -D -m 0755 "$qemu_ga" "$root/usr/sbin/qemu-ga"
  while read -r lib; do
    [[ -f "$lib" ]] || die "ldd $qemu_ga: $lib not found"
    install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done < <(ldd "$qemu_ga" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
  [[ -n "$(ls "$root"/lib64/ld-linux-* 2>/dev/null)" ]] || die "ldd $qemu_ga named no dynamic linker"
  log "agent archive: qemu-ga $(dpkg-query -W -f='${Version}' qemu-guest-agent 2>/dev/null) and $(ldd "$qemu_ga" | grep -c '=> /') libraries"
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$out"
}

write_mbr() { # disk, first sector, sector count: one bootable partition of type 0xEF (ESP)
  local disk="$1" start="$2" count="$3"
  le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }
  { printf '\x46\x56\x47\x31\x00\x00'                   # disk signature "FVG1", reserved
    printf '\x80\xfe\xff\xff\xef\xfe\xff\xff'           # active, CHS unused (LBA only), type EF
    printf "$(le32 "$start")$(le32 "$count")"
    head -c 48 /dev/zero                                 # partitions 2-4 empty
    printf '\x55\xaa'
  } | dd of="$disk" bs=1 seek=440 conv=notrunc status=none
}

grub_cfg() {
  cat <<EOF
search --no-floppy --label --set=root $DISK_LABEL
linux /boot/vmlinuz $DISK_CMDLINE
initrd /boot/initrd.img
boot
EOF
}

build_disk() { # out.qcow2
  local out="$1" raw="$work/disk.raw" part="$work/part.img"
  local disk_mib=64 start=2048
  local sectors=$((disk_mib * 2048 - start))
  grub_cfg >"$work/grub.cfg"
  rm -f "$part"
  mkfs.vfat -F 16 -s 16 -n "$DISK_LABEL" -i 46564731 -C "$part" $((sectors / 2)) >/dev/null
  export MTOOLS_SKIP_CHECK=1
  mmd -i "$part" ::/boot ::/boot/grub
  mcopy -i "$part" "$work/vmlinuz" ::/boot/vmlinuz
  mcopy -i "$part" "$work/initrd-base.img" ::/boot/initrd.img
  mcopy -i "$part" "$work/agent.img" ::/boot/agent.img
  mcopy -i "$part" "$work/grub.cfg" ::/boot/grub/grub.cfg   # for reading only: GRUB uses its embedded copy

  # BIOS: GRUB's boot.img in the MBR, core.img (with the config embedded, no modules read
  # from disk) in the gap before the partition.
  mkdir -p "$work/bios"
  cp "$grub_pc/boot.img" "$work/bios/boot.img"
  grub-mkimage -O i386-pc -d "$grub_pc" -o "$work/bios/core.img" -c "$work/grub.cfg" -p /boot/grub \
    biosdisk part_msdos fat search search_label linux
  # UEFI: the removable-media path \EFI\BOOT\BOOTX64.EFI, same embedded config.
  if [[ "$efi" == 1 ]]; then
    grub-mkimage -O x86_64-efi -d "$grub_efi" -o "$work/BOOTX64.EFI" -c "$work/grub.cfg" -p /EFI/BOOT \
      part_msdos part_gpt fat search search_label linux efi_gop
    mmd -i "$part" ::/EFI ::/EFI/BOOT
    mcopy -i "$part" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
  fi

  rm -f "$raw"
  truncate -s "${disk_mib}M" "$raw"
  write_mbr "$raw" "$start" "$sectors"
  dd if="$part" of="$raw" bs=1M seek=1 conv=notrunc,sparse status=none
  # boot.img's code (not its partition table) into the MBR and core.img from sector 1, as
  # grub-mkimage made them: boot.img loads sector 1, whose blocklist (sector 2, core length)
  # grub-mkimage has filled in. grub-bios-setup would do the same but insists on probing the
  # host disk under the GRUB directory.
  local core_sectors=$(( ($(stat -c %s "$work/bios/core.img") + 511) / 512 ))
  (( core_sectors < start )) || die "core.img ($core_sectors sectors) does not fit before sector $start"
  dd if="$work/bios/boot.img" of="$raw" bs=440 count=1 conv=notrunc status=none
  dd if="$work/bios/core.img" of="$raw" bs=512 seek=1 conv=notrunc status=none
  qemu-img convert -q -f raw -O qcow2 "$raw" "$out"
}

# The uncompressed kernel (ELF with a PVH entry point) that QEMU's -kernel boots directly:
# it skips the bzImage's XZ decompression, about 6 s of emulated CPU under TCG.
extract_vmlinux() { # bzImage out
  local off
  grep -q '^CONFIG_PVH=y' "/boot/config-$kver" 2>/dev/null \
    || die "kernel $kver has no PVH entry point (CONFIG_PVH)"
  off="$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$1" | head -n 1 | cut -d: -f1 || true)"
  [[ -n "$off" ]] || die "no XZ payload in $1"
  xz -dc --single-stream <(tail -c +$((off + 1)) "$1") >"$2" || die "cannot unpack $1"
  [[ "$(head -c 4 "$2" | od -An -c | tr -d ' ')" == '177ELF' ]] || die "$1 does not hold an ELF kernel"
}

if [[ "$force" == 0 && -f "$guests/STAMP" && "$(cat "$guests/STAMP")" == "$stamp" \
      && -f "$guests/vmlinuz" && -f "$guests/vmlinux" && -f "$guests/initrd.img" \
      && -f "$guests/disk.qcow2" ]]; then
  log "guests up to date in $guests (stamp $stamp)"
else
  log "building guests into $guests (kernel $kver, stamp $stamp, UEFI $([[ $efi == 1 ]] && echo yes || echo 'no: grub-efi-amd64-bin missing'))"
  work="$guests/.build"
  rm -rf "$work"
  mkdir -p "$work"
  cp "$kernel" "$work/vmlinuz"
  extract_vmlinux "$kernel" "$work/vmlinux"
  build_initrd "$work/initrd-base.img"
  build_agent "$work/agent.img"
  # The kernel takes an uncompressed archive only at a 4-byte boundary: zeros in between
  # are skipped.
  { cat "$work/initrd-base.img"
    head -c $(( (512 - $(stat -c %s "$work/initrd-base.img") % 512) % 512 )) /dev/zero
    cat "$work/agent.img"
  } >"$work/initrd.img"
  log "initramfs: $(du -k "$work/initrd.img" | cut -f1) KiB, of which the agent $(du -k "$work/agent.img" | cut -f1) KiB (the disk's /boot/agent.img)"
  build_disk "$work/disk.qcow2"
  log "disk: $(du -k "$work/disk.qcow2" | cut -f1) KiB used of 64 MiB, BIOS$([[ $efi == 1 ]] && echo ' + UEFI')"
  echo "$DISK_CMDLINE" >"$work/cmdline"
  # New files replace old ones by rename: links already in the image store (and any running
  # VM's backing file) keep the previous inode.
  for f in vmlinuz vmlinux initrd.img disk.qcow2 cmdline; do mv -f "$work/$f" "$guests/$f"; done
  echo "$stamp" >"$guests/STAMP"
  rm -rf "$work"
  log "guests built"
fi

# ---- image store --------------------------------------------------------------------------
normalize_ref() { # a reference without a tag (or digest) means :latest
  local last="${1##*/}"
  if [[ "$last" == *:* || "$last" == *@* ]]; then echo "$1"; else echo "$1:latest"; fi
}
escape_ref() {
  local ref
  ref="$(normalize_ref "$1")"
  ref="${ref//\//_}"
  echo "${ref//:/_}"
}
link() { # target link-name: hardlink, or a symlink across filesystems
  ln -f "$1" "$2" 2>/dev/null || ln -sf "$1" "$2"
}

declare -A disk_refs=() kernel_refs=()
disk_refs["ferrovirt/guest-disk:latest"]=1
# Kernel-boot images hold the PVH vmlinux at their kernelPath (fast, BIOS only); ours also
# has Debian's bzImage at /boot/vmlinuz (for UEFI, or any loader that wants a bzImage).
kernel_refs["ferrovirt/guest-kernel:latest"]="/boot/vmlinux /boot/initrd.img"
# The images KubeVirt's examples use, also when ../shared/kubevirt-examples is absent.
for r in registry:5000/kubevirt/cirros-container-disk-demo:devel \
         registry:5000/kubevirt/alpine-container-disk-demo:devel \
         registry:5000/kubevirt/fedora-with-test-tooling-container-disk:devel \
         quay.io/kubevirt/cirros-container-disk-demo \
         quay.io/kubevirt/alpine-container-disk-demo \
         quay.io/kubevirt/fedora-with-test-tooling-container-disk \
         ${FERROVIRT_EXTRA_DISK_REFS:-}; do
  disk_refs["$r"]=1
done
kernel_refs["registry:5000/kubevirt/alpine-ext-kernel-boot-demo:devel"]="/boot/vmlinuz-virt /boot/initramfs-virt"

# Every image: of the examples, by the block it is in (containerDisk or kernelBoot).
if [[ -d "$examples" ]]; then
  while read -r kind ref kpath ipath; do
    case "$kind" in
      disk) disk_refs["$ref"]=1 ;;
      kernel) kernel_refs["$ref"]="$kpath $ipath" ;;
    esac
  done < <(awk '
    function flush() { if (kref != "") print "kernel", kref, (kp == "" ? "/boot/vmlinuz" : kp), (ip == "" ? "/boot/initrd.img" : ip); kref = kp = ip = "" }
    FNR == 1 { flush(); mode = "" }
    /containerDisk:/ { mode = "disk" }
    /kernelBoot:/ { mode = "kernel" }
    /^[ \t-]*image:/ { v = $0; sub(/.*image:[ \t]*/, "", v); gsub(/["\047]/, "", v)
      if (mode == "disk") { print "disk", v; mode = "" } else if (mode == "kernel") kref = v }
    /kernelPath:/ { kp = $2; gsub(/["\047]/, "", kp) }
    /initrdPath:/ { ip = $2; gsub(/["\047]/, "", ip) }
    END { flush() }' "$examples"/*.yaml "$examples"/*.yml 2>/dev/null)
else
  log "no examples at $examples: mapping the built-in list only"
fi

index_tmp="$images/.index.tsv.$$"
: >"$index_tmp"
for ref in "${!disk_refs[@]}"; do
  dir="$images/$(escape_ref "$ref")"
  rm -rf "$dir"
  mkdir -p "$dir/disk"
  link "$guests/disk.qcow2" "$dir/disk/ferrovirt-guest.qcow2"
  printf '%s\t%s\n' "$(normalize_ref "$ref")" "$dir" >>"$index_tmp"
done
for ref in "${!kernel_refs[@]}"; do
  read -r kpath ipath <<<"${kernel_refs[$ref]}"
  dir="$images/$(escape_ref "$ref")"
  rm -rf "$dir"
  mkdir -p "$dir/$(dirname "${kpath#/}")" "$dir/$(dirname "${ipath#/}")"
  link "$guests/vmlinux" "$dir/${kpath#/}"
  link "$guests/initrd.img" "$dir/${ipath#/}"
  [[ "$ref" == ferrovirt/guest-kernel:* ]] && link "$guests/vmlinuz" "$dir/boot/vmlinuz"
  printf '%s\t%s\n' "$(normalize_ref "$ref")" "$dir" >>"$index_tmp"
done
LC_ALL=C sort -o "$index_tmp" "$index_tmp"
mv -f "$index_tmp" "$images/index.tsv"
log "image store: $(wc -l <"$images/index.tsv") references in $images/index.tsv"
