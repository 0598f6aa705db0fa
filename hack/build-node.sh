#!/usr/bin/env bash
# Builds what the real node (hack/node/, docs/real-node.md) runs, with Go from the Go module
# proxy and gcc, into versioned directories of $FERROVIRT_CACHE (outside the repo):
#   kube-node-v$KUBE_VERSION      kubelet, kube-proxy (the control plane's version and module
#                                 setup: hack/build-control-plane.sh runs first)
#   containerd-v$CONTAINERD_VERSION  containerd, containerd-shim-runc-v2, ctr
#   cni-plugins-v$CNI_PLUGINS_VERSION bridge, host-local, loopback, portmap
#   cri-tools-v$CRI_TOOLS_VERSION crictl
#   registry-v$REGISTRY_VERSION   registry (distribution v3)
#   crane-v$CRANE_VERSION         crane (pushes OCI layouts to the registry)
#   node-images/                  pause and busybox OCI images, made offline
# runc comes from Debian (hack/setup.sh). Builds only what is missing and prints a line per
# piece with its duration; a cold run takes several minutes on 2 cores.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
exec </dev/null

command -v go >/dev/null || die "go not found: install Go 1.25 or newer"
work="$FERROVIRT_CACHE/build"
mkdir -p "$work"
export GOFLAGS="-mod=mod -buildvcs=false"

# go_tools NAME MODULE VERSION OUT TAGS LDFLAGS PKG:BIN...: builds each package PKG as OUT/BIN
# in a module of its own ($work/NAME-VERSION) that requires MODULE@VERSION.
# go_module NAME MODULE VERSION FILE: a wrapper module ($work/NAME-VERSION, put in $mod)
# requiring MODULE at VERSION, with FILE (tools.go or main.go) read from stdin; resolved
# and downloaded once.
go_module() {
  local name="$1" module="$2" version="$3" file="$4" t
  mod="$work/$name-$version"
  mkdir -p "$mod"
  if [[ -f "$mod/.ready" ]]; then
    cat >/dev/null
    return 0
  fi
  t=$(now)
  log "$name: resolving $module v$version"
  printf 'module ferrovirt.local/%s\n\ngo 1.25.0\n\nrequire %s v%s\n' "$name" "$module" "$version" >"$mod/go.mod"
  cat >"$mod/$file"
  (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$mod" && go mod download) || die "go mod download failed for $module v$version"
  touch "$mod/.ready"
  log "$name: resolved in $(( $(now) - t ))s"
}

# go_tools NAME MODULE VERSION OUT TAGS LDFLAGS PKG:BIN...: builds the missing BINs.
go_tools() {
  local name="$1" module="$2" version="$3" out="$4" tags="$5" ld="$6"; shift 6
  local missing=() pb mod
  for pb in "$@"; do [[ -x "$out/${pb##*:}" ]] || missing+=("$pb"); done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "$name v$version already built in $out"
    return 0
  fi
  mkdir -p "$out"
  go_module "$name" "$module" "$version" tools.go < <(
    echo "//go:build tools"; echo; echo "package tools"; echo
    for pb in "$@"; do echo "import _ \"${pb%%:*}\""; done)
  for pb in "${missing[@]}"; do
    go_build "$mod" "$out" "${pb##*:}" "${pb%%:*}" "$tags" "$ld"
  done
}

# go_build MODDIR OUT BIN PKG TAGS LDFLAGS
go_build() {
  local mod="$1" out="$2" bin="$3" pkg="$4" tags="$5" ld="$6" t
  t=$(now)
  log "go build $bin ($pkg)"
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "-s -w $ld" -o "$out/$bin.tmp" "$pkg") \
    || die "building $bin failed"
  mv "$out/$bin.tmp" "$out/$bin"
  log "built $bin in $(( $(now) - t ))s"
}

# kubelet and kube-proxy: the control plane's module (same require and replace lines), copied.
build_kube_node() {
  local out; out="$(kube_node_dir)"
  if [[ -x "$out/kubelet" && -x "$out/kube-proxy" ]]; then
    log "kubelet and kube-proxy v$KUBE_VERSION already built in $out"
    return 0
  fi
  local cp_mod="$work/kube-$KUBE_VERSION" mod="$work/kube-node-$KUBE_VERSION" t
  [[ -f "$cp_mod/.ready" ]] || "$FERROVIRT_ROOT/hack/build-control-plane.sh"
  [[ -f "$cp_mod/.ready" ]] || die "no resolved Kubernetes module in $cp_mod (hack/build-control-plane.sh)"
  mkdir -p "$mod" "$out"
  if [[ ! -f "$mod/.ready" ]]; then
    t=$(now)
    log "kubelet/kube-proxy: module from $cp_mod"
    sed 's#^module .*#module ferrovirt.local/kubenode#' "$cp_mod/go.mod" >"$mod/go.mod"
    cp "$cp_mod/go.sum" "$mod/go.sum"
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kubelet"\n\t_ "k8s.io/kubernetes/cmd/kube-proxy"\n)\n' >"$mod/tools.go"
    (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true)
    (cd "$mod" && go mod download) || die "go mod download failed for kubelet/kube-proxy v$KUBE_VERSION"
    touch "$mod/.ready"
    log "kubelet/kube-proxy: resolved in $(( $(now) - t ))s"
  fi
  # The version stamps kubectl and the API server report, as for the control plane.
  local major="${KUBE_VERSION%%.*}" minor="${KUBE_VERSION#*.}" ld="" p b
  minor="${minor%%.*}"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=v$KUBE_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  for b in kubelet kube-proxy; do
    [[ -x "$out/$b" ]] || go_build "$mod" "$out" "$b" "k8s.io/kubernetes/cmd/$b" "" "$ld"
  done
}

# The registry: distribution's own command (registry.RootCmd, `registry serve CONFIG`) with
# only the filesystem storage driver. Its cmd/registry also links the Azure, GCS and S3
# drivers, which a registry on this machine never uses and which take most of the build.
build_registry() {
  local out mod; out="$(registry_dir)"
  if [[ -x "$out/registry" ]]; then
    log "registry v$REGISTRY_VERSION already built in $out"
    return 0
  fi
  mkdir -p "$out"
  go_module registry-fs github.com/distribution/distribution/v3 "$REGISTRY_VERSION" main.go <<'GO'
// distribution's registry command with the filesystem storage driver only.
package main

import (
	"os"

	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func main() {
	if err := registry.RootCmd.Execute(); err != nil {
		os.Exit(1)
	}
}
GO
  go_build "$mod" "$out" registry . "" \
    "-X github.com/distribution/distribution/v3/version.version=v$REGISTRY_VERSION"
}

build_containerd() {
  local out; out="$(containerd_dir)"
  local tags="urfave_cli_no_docs osusergo netgo static_build no_btrfs no_devmapper no_zfs"
  local ld="-X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION"
  ld+=" -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
  go_tools containerd github.com/containerd/containerd/v2 "$CONTAINERD_VERSION" "$out" "$tags" "$ld" \
    github.com/containerd/containerd/v2/cmd/containerd:containerd \
    github.com/containerd/containerd/v2/cmd/ctr:ctr
  # The shim is built without gRPC (ttrpc only), as containerd's own release builds it.
  go_tools containerd github.com/containerd/containerd/v2 "$CONTAINERD_VERSION" "$out" "$tags no_grpc" "$ld" \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2:containerd-shim-runc-v2
}

build_images() {
  local out; out="$(node_images_dir)"
  local src="$FERROVIRT_ROOT/hack/node"
  mkdir -p "$out"
  # Rebuilt when its source or the image maker changes (the stamp holds their hashes).
  local stamp; stamp="$(cat "$src/pause.c" "$src/oci-image.sh" | sha256sum | cut -c1-16)"
  if [[ -f "$out/pause.tar" && "$(cat "$out/pause.stamp" 2>/dev/null)" == "$stamp" ]]; then
    log "pause image already built in $out"
  else
    command -v gcc >/dev/null || die "gcc not found (Debian: gcc, libc6-dev)"
    local root; root="$(mktemp -d)"
    gcc -static -Os -s -o "$root/pause" "$src/pause.c" || die "building pause.c failed"
    "$src/oci-image.sh" "$PAUSE_IMAGE" "$root" "$out/pause" /pause
    rm -rf "$root"
    echo "$stamp" >"$out/pause.stamp"
    log "built the pause image $PAUSE_IMAGE ($(stat -c %s "$out/pause.tar") bytes)"
  fi
  local bb=/bin/busybox
  stamp="$( (sha256sum "$bb"; cat "$src/oci-image.sh") | sha256sum | cut -c1-16)"
  if [[ -f "$out/busybox.tar" && "$(cat "$out/busybox.stamp" 2>/dev/null)" == "$stamp" ]]; then
    log "busybox image already built in $out"
  else
    [[ -x "$bb" ]] || die "$bb not found: install Debian's busybox-static"
    ! ldd "$bb" >/dev/null 2>&1 || die "$bb is not static: install Debian's busybox-static"
    local root; root="$(mktemp -d)"
    mkdir -p "$root/bin" "$root/tmp"
    cp "$bb" "$root/bin/busybox"
    local applet
    for applet in sh nc cat echo sleep ls hostname ip ps wget; do ln -s busybox "$root/bin/$applet"; done
    "$src/oci-image.sh" "$BUSYBOX_IMAGE" "$root" "$out/busybox" /bin/sh
    rm -rf "$root"
    echo "$stamp" >"$out/busybox.stamp"
    log "built the busybox image $BUSYBOX_IMAGE ($(stat -c %s "$out/busybox.tar") bytes)"
  fi
}

t_all=$(now)
log "building the real node's binaries into $FERROVIRT_CACHE"
build_images
go_tools cni-plugins github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION" "$(cni_plugins_dir)" "" "" \
  github.com/containernetworking/plugins/plugins/main/bridge:bridge \
  github.com/containernetworking/plugins/plugins/ipam/host-local:host-local \
  github.com/containernetworking/plugins/plugins/main/loopback:loopback \
  github.com/containernetworking/plugins/plugins/meta/portmap:portmap
go_tools cri-tools sigs.k8s.io/cri-tools "$CRI_TOOLS_VERSION" "$(cri_tools_dir)" "" \
  "-X sigs.k8s.io/cri-tools/pkg/version.Version=v$CRI_TOOLS_VERSION" \
  sigs.k8s.io/cri-tools/cmd/crictl:crictl
build_registry
go_tools crane github.com/google/go-containerregistry "$CRANE_VERSION" "$(crane_dir)" "" "" \
  github.com/google/go-containerregistry/cmd/crane:crane
build_containerd
build_kube_node
command -v runc >/dev/null || log "warning: runc not found: install Debian's runc (hack/setup.sh)"
log "real node ready to start (hack/node/up.sh) after $(( $(now) - t_all ))s"
