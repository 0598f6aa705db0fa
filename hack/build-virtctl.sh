#!/usr/bin/env bash
# Builds KubeVirt's own virtctl (module kubevirt.io/kubevirt, cmd/virtctl) with Go from the
# Go module proxy into $FERROVIRT_CACHE/kubevirt-v$VIRTCTL_VERSION/virtctl, so the tests can
# drive Ferrovirt with KubeVirt's unchanged client. Idempotent: does nothing when the binary
# is there.
#
# kubevirt.io/kubevirt replaces kubevirt.io/api and kubevirt.io/client-go with paths inside
# its repository, which a consumer cannot use. A wrapper module copies kubevirt's `replace`
# lines and points those two at the published modules of the same version. v1.7.x builds
# this way; v1.8 and later also need template modules the proxy does not serve.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

out="$(virtctl_dir)"
bin="$out/virtctl"
if [[ -x "$bin" ]]; then
  log "virtctl v$VIRTCTL_VERSION already built in $out"
  exit 0
fi
command -v go >/dev/null || die "go not found: install Go 1.25 or newer"
mkdir -p "$out"

mod="$FERROVIRT_CACHE/build/kubevirt-$VIRTCTL_VERSION"
mkdir -p "$mod"
export GOFLAGS="-mod=mod"

info="$(cd "$mod" && go mod download -json "kubevirt.io/kubevirt@v$VIRTCTL_VERSION")" \
  || die "could not download kubevirt.io/kubevirt v$VIRTCTL_VERSION from the Go module proxy"
# The tag's commit, when the proxy reports it (for virtctl's GitCommit).
commit="$(sed -n 's/.*"Hash": "\([0-9a-f]*\)".*/\1/p' <<<"$info")"
if [[ ! -f "$mod/.ready" ]]; then
  log "resolving kubevirt.io/kubevirt v$VIRTCTL_VERSION and its replace lines"
  gomod="$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' <<<"$info")"
  [[ -f "$gomod" ]] || die "could not download kubevirt.io/kubevirt v$VIRTCTL_VERSION from the Go module proxy"
  {
    echo "module ferrovirt.local/virtctl"
    echo
    echo "go 1.25.0"
    echo
    echo "require ("
    echo "	kubevirt.io/kubevirt v$VIRTCTL_VERSION"
    echo "	kubevirt.io/api v$VIRTCTL_VERSION"
    echo "	kubevirt.io/client-go v$VIRTCTL_VERSION"
    echo ")"
    echo
    echo "replace ("
    # Every replace line of kubevirt's go.mod except the two local staging paths, which
    # become the published modules of the same version.
    sed -n '/^replace (/,/^)/p' "$gomod" | sed '1d;$d' | grep -vE '^\s*$|=> \./'
    echo "	kubevirt.io/api => kubevirt.io/api v$VIRTCTL_VERSION"
    echo "	kubevirt.io/client-go => kubevirt.io/client-go v$VIRTCTL_VERSION"
    echo ")"
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "kubevirt.io/kubevirt/cmd/virtctl"
GO
  log "downloading virtctl's dependencies"
  (cd "$mod" && nice -n 10 go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$mod" && go mod download) || die "go mod download failed for kubevirt v$VIRTCTL_VERSION"
  touch "$mod/.ready"
fi

# virtctl prints its client version from these (kubevirt's hack/version.sh sets the same).
pkg="kubevirt.io/client-go/version"
ld="-s -w -X $pkg.gitVersion=v$VIRTCTL_VERSION -X $pkg.gitTreeState=clean"
ld+=" -X $pkg.buildDate=1970-01-01T00:00:00Z -X $pkg.gitCommit=$commit"
log "go build virtctl v$VIRTCTL_VERSION (a cold build takes minutes on 2 cores)"
(cd "$mod" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$ld" -o "$bin.tmp" \
  kubevirt.io/kubevirt/cmd/virtctl) || die "building virtctl v$VIRTCTL_VERSION failed"
mv "$bin.tmp" "$bin"
log "built virtctl into $bin"
"$bin" version --client >&2
