#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl with Go
# from the Go module proxy into $FERROVIRT_CACHE/k8s-v$KUBE_VERSION (or $KUBEBUILDER_ASSETS).
# Builds only what is missing; a cold build takes a while on 2 cores, so it prints
# a line per binary with the elapsed time.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

out="$(control_plane_dir)"
mkdir -p "$out"
command -v go >/dev/null || die "go not found: install Go 1.25 or newer"

missing=()
for b in "${CONTROL_PLANE_BINARIES[@]}"; do
  [[ -x "$out/$b" ]] || missing+=("$b")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  log "control plane v$KUBE_VERSION already built in $out"
  exit 0
fi
log "building ${missing[*]} into $out (Kubernetes v$KUBE_VERSION, etcd v$ETCD_VERSION)"

work="$FERROVIRT_CACHE/build"
mkdir -p "$work"
export GOFLAGS="-mod=mod"

build_kube() {
  local mod="$work/kube-$KUBE_VERSION"
  mkdir -p "$mod"
  if [[ ! -f "$mod/.ready" ]]; then
    log "resolving k8s.io/kubernetes v$KUBE_VERSION and its staging modules"
    local gomod
    gomod="$(cd "$mod" && go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" \
      | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    [[ -f "$gomod" ]] || die "could not download k8s.io/kubernetes v$KUBE_VERSION from the Go module proxy"
    local minor="0.${KUBE_VERSION#1.}"
    {
      echo "module ferrovirt.local/controlplane"
      echo
      echo "go 1.25.0"
      echo
      echo "require k8s.io/kubernetes v$KUBE_VERSION"
      echo
      echo "replace ("
      # k8s.io/kubernetes replaces its staging modules with local paths; a consumer must
      # point each at the published module of the matching v0.x version instead.
      grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" \
        | awk -v v="v$minor" '{print "\t" $1 " => " $1 " " v}'
      echo ")"
    } >"$mod/go.mod"
    cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true)
    (cd "$mod" && go mod download) || die "go mod download failed for Kubernetes v$KUBE_VERSION"
    touch "$mod/.ready"
  fi
  local pkg="k8s.io/component-base/version" cgo="k8s.io/client-go/pkg/version"
  local major="${KUBE_VERSION%%.*}" minor="${KUBE_VERSION#*.}"; minor="${minor%%.*}"
  local ld="-s -w"
  for p in "$pkg" "$cgo"; do
    ld+=" -X $p.gitVersion=v$KUBE_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [[ -x "$out/$b" ]] && continue
    log "go build $b (cold builds take minutes on 2 cores)"
    (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$out/$b.tmp" "k8s.io/kubernetes/cmd/$b") \
      || die "building $b failed"
    mv "$out/$b.tmp" "$out/$b"
    log "built $b"
  done
}

build_etcd() {
  [[ -x "$out/etcd" ]] && return 0
  local mod="$work/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  if [[ ! -f "$mod/go.mod" ]]; then
    cat >"$mod/go.mod" <<GOMOD
module ferrovirt.local/etcd

go 1.25.0

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
GOMOD
    cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
    (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true)
  fi
  log "go build etcd v$ETCD_VERSION"
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3) \
    || die "building etcd failed"
  mv "$out/etcd.tmp" "$out/etcd"
  log "built etcd"
}

build_etcd
build_kube
for b in "${CONTROL_PLANE_BINARIES[@]}"; do
  [[ -x "$out/$b" ]] || die "$b missing after the build"
done
log "control plane ready in $out"
"$out/kube-apiserver" --version >&2
