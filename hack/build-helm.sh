#!/usr/bin/env bash
# Builds helm (module helm.sh/helm/v3, cmd/helm) with Go from the Go module proxy into
# $FERROVIRT_CACHE/helm-v$HELM_VERSION/helm, cached like the control plane: the chart's
# tests (tests/tests/chart.rs) run `helm lint` and `helm template` with it, and a user of
# the local cluster installs Ferrovirt with it. Idempotent: does nothing when the binary
# is there. `$HELM` (a helm binary elsewhere) is what the tests use instead, when set.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

HELM_VERSION="${HELM_VERSION:-3.22.0}"
out="$FERROVIRT_CACHE/helm-v$HELM_VERSION"
bin="$out/helm"
if [[ -x "$bin" ]]; then
  log "helm v$HELM_VERSION already built in $out"
  exit 0
fi
command -v go >/dev/null || die "go not found: install Go 1.25 or newer"
mkdir -p "$out"

# A wrapper module that requires helm at the pinned version: `go build` of a package of a
# required module builds it with that module's own go.mod requirements (helm has no
# replace lines), without a checkout.
mod="$FERROVIRT_CACHE/build/helm-$HELM_VERSION"
mkdir -p "$mod"
export GOFLAGS="-mod=mod"
if [[ ! -f "$mod/.ready" ]]; then
  log "resolving helm.sh/helm/v3 v$HELM_VERSION"
  cat >"$mod/go.mod" <<EOF
module ferrovirt.local/helm

go 1.25.0

require helm.sh/helm/v3 v$HELM_VERSION
EOF
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
  log "downloading helm's dependencies"
  (cd "$mod" && go mod tidy >/dev/null 2>&1) || die "go mod tidy failed for helm v$HELM_VERSION (Go module proxy reachable?)"
  (cd "$mod" && go mod download) || die "go mod download failed for helm v$HELM_VERSION"
  touch "$mod/.ready"
fi

# helm prints its version from these (helm's Makefile sets the same).
pkg="helm.sh/helm/v3/internal/version"
ld="-s -w -X $pkg.version=v$HELM_VERSION -X $pkg.gitTreeState=clean"
log "go build helm v$HELM_VERSION (a cold build takes a few minutes on 2 cores)"
(cd "$mod" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$ld" -o "$bin.tmp" \
  helm.sh/helm/v3/cmd/helm) || die "building helm v$HELM_VERSION failed"
mv "$bin.tmp" "$bin"
log "built helm into $bin"
"$bin" version >&2
