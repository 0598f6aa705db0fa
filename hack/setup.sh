#!/usr/bin/env bash
# Installs everything Ferrovirt needs on this machine, skipping what is already there:
# Debian packages, the control-plane binaries (built with Go), KubeVirt's virtctl (built
# with Go, for the tests that drive Ferrovirt with it), the real node's binaries (kubelet,
# containerd, ...), helm, the test guests, and the workspace's binaries. Idempotent; runs
# unattended (CI=true, no stdin).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
exec </dev/null

APT_PACKAGES=(
  libvirt-daemon-system libvirt-dev libvirt-clients
  qemu-system-x86 qemu-utils ovmf
  busybox-static linux-image-amd64 cpio xorriso genisoimage
  grub-pc-bin grub-common dosfstools mtools
  grub-efi-amd64-bin xz-utils libxml2-utils
  pkg-config libclang-dev clang openssl
  mmdebstrap runc iptables libc6-dev iproute2 nftables
  qemu-guest-agent passt swtpm swtpm-tools
)

step() { log "== $*"; }

step "Debian packages"
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  log "all ${#APT_PACKAGES[@]} packages present"
else
  log "installing ${missing[*]}"
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
  "${sudo[@]}" apt-get install -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" >&2 || die "apt-get install failed"
  log "installed ${#missing[@]} packages"
fi

step "toolchains"
command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
command -v go >/dev/null || die "go not found: install Go 1.25 or newer first"
cargo fmt --version >/dev/null 2>&1 || die "rustfmt not found: rustup component add rustfmt (hack/test.sh checks formatting)"
cargo clippy --version >/dev/null 2>&1 || die "clippy not found: rustup component add clippy (hack/test.sh runs it)"
log "$(cargo --version), $(go version | cut -d' ' -f3)"

# Two lanes at once: the Go builds of the control plane and the node in one, KubeVirt's
# virtctl, helm, the guests and the workspace in the other. Each build alone leaves a core
# idle while it links or downloads; side by side one's link or download overlaps the
# other's compiling. Each line says which script printed it.
lane_kube() {
  step "control plane (Kubernetes v$KUBE_VERSION) in $(control_plane_dir)"
  "$FERROVIRT_ROOT/hack/build-control-plane.sh"
  step "real node: kubelet, kube-proxy, containerd, CNI plugins, crictl, registry, crane, pause/busybox images"
  "$FERROVIRT_ROOT/hack/build-node.sh"
}
lane_tools() {
  step "KubeVirt's virtctl v$VIRTCTL_VERSION in $(virtctl_dir)"
  "$FERROVIRT_ROOT/hack/build-virtctl.sh"
  step "helm (the chart's tests; installing Ferrovirt)"
  "$FERROVIRT_ROOT/hack/build-helm.sh"
  if [[ -f "$FERROVIRT_ROOT/hack/build-guest-images.sh" ]]; then
    step "guest images in $FERROVIRT_CACHE"
    bash "$FERROVIRT_ROOT/hack/build-guest-images.sh"
  fi
  step "workspace binaries"
  (cd "$FERROVIRT_ROOT" && cargo build --workspace --bins)
}
lane_kube & kube_pid=$!
lane_tools & tools_pid=$!
kube_rc=0 tools_rc=0
wait "$kube_pid" || kube_rc=$?
wait "$tools_pid" || tools_rc=$?
[[ $kube_rc -eq 0 ]] || die "building the control plane or the real node failed (exit $kube_rc; its error is above)"
[[ $tools_rc -eq 0 ]] || die "building virtctl, helm, the guests or the workspace failed (exit $tools_rc; its error is above)"

step "Ferrovirt's images and the guests' containerDisk images as OCI layouts in $FERROVIRT_CACHE/image-build/oci (the real-node tests push them to their node's registry)"
"$FERROVIRT_ROOT/hack/build-images.sh" --no-push

log "setup done"
