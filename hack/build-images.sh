#!/usr/bin/env bash
# Builds Ferrovirt's four images (virt-controller, virt-api, virt-handler, virt-launcher)
# and the test guests' containerDisk images offline, without Docker, and pushes them to the
# local registry (docs/real-node.md). The layers are those of deploy/images/*.Dockerfile, in
# their order (docs/images.md):
#   1. a Debian bookworm root filesystem made with mmdebstrap (minbase, docs and man pages
#      left out, as debian:bookworm-slim), shared by the four images;
#   2. the Dockerfile's PACKAGES installed on it (virt-handler, virt-launcher), as the
#      difference between the two root filesystems;
#   3. our binary in /usr/local/bin, stripped.
# Layers 1 and 2 are cached in $FERROVIRT_CACHE/image-build, keyed by the Debian sources and
# the package list: when only our code changed, only layer 3 is made again and pushed.
#
# Usage: hack/build-images.sh [--registry HOST:PORT] [--release] [--no-push] [--no-guests]
#   --registry   where to push (default $FERROVIRT_REGISTRY, else 10.250.0.1:5000, the
#                local cluster's registry; plain HTTP)
#   --release    binaries from `cargo build --release` (smaller, slower to build); the
#                default is the debug build, stripped (see docs/images.md)
#   --no-push    only write the OCI layouts into $FERROVIRT_CACHE/image-build/oci/
#   --no-guests  skip the containerDisk images
# Tags pushed: the workspace version (the chart's appVersion), `dev` (virt-controller's
# default launcher image tag), and git-<commit>[-dirty].
set -euo pipefail
source "$(dirname "$0")/lib.sh"

registry="${FERROVIRT_REGISTRY:-10.250.0.1:5000}"
profile=debug
push=1
guests=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --registry) registry="$2"; shift 2 ;;
    --release) profile=release; shift ;;
    --no-push) push=0; shift ;;
    --no-guests) guests=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

COMPONENTS=(virt-controller virt-api virt-handler virt-launcher)
CRANE_VERSION="${CRANE_VERSION:-0.22.1}"
SUITE=bookworm
work="$FERROVIRT_CACHE/image-build"
images_dir="$FERROVIRT_ROOT/deploy/images"
oci_py="$images_dir/oci.py"
mkdir -p "$work/rootfs" "$work/layers" "$work/oci"
# Reproducible layers: every mtime is clamped to the last commit's time.
SOURCE_DATE_EPOCH="$(git -C "$FERROVIRT_ROOT" log -1 --format=%ct 2>/dev/null || echo 0)"
export SOURCE_DATE_EPOCH

step() { local t=$SECONDS; log "$1 ..."; shift; "$@"; log "  done in $((SECONDS - t))s"; }
human() { numfmt --to=iec --suffix=B "$1"; }
# The Dockerfile's ARG PACKAGES / USER / ENTRYPOINT (the one source of each).
dockerfile_arg() { sed -n "s/^ARG $2=\"\(.*\)\"$/\1/p" "$images_dir/$1.Dockerfile"; }
dockerfile_user() { sed -n 's/^USER \(.*\)$/\1/p' "$images_dir/$1.Dockerfile" | tail -1; }
dockerfile_entrypoint() { sed -n 's/^ENTRYPOINT \(.*\)$/\1/p' "$images_dir/$1.Dockerfile" | tail -1; }

# --- tools -------------------------------------------------------------------------------
command -v mmdebstrap >/dev/null || die "mmdebstrap not found: apt-get install mmdebstrap (hack/setup.sh installs it)"
command -v python3 >/dev/null || die "python3 not found: apt-get install python3"
crane="$FERROVIRT_CACHE/crane-v$CRANE_VERSION/crane"
if [[ ! -x "$crane" ]]; then
  command -v go >/dev/null || die "go not found: install Go 1.25 or newer (to build crane)"
  step "building crane v$CRANE_VERSION (go-containerregistry) into $(dirname "$crane")" \
    env GOBIN="$(dirname "$crane")" CGO_ENABLED=0 GOFLAGS=-mod=mod \
    go install -trimpath -ldflags "-s -w" "github.com/google/go-containerregistry/cmd/crane@v$CRANE_VERSION"
fi
[[ $(id -u) -eq 0 ]] || die "mmdebstrap needs root here (its root mode keeps file owners)"

# The registry must be on this machine: loopback, or an address of one of its interfaces
# (the local cluster's registry listens on the host end of the node's veth). Anything else
# would send traffic off the machine.
registry_is_local() {
  local host="${registry%:*}"
  [[ "$host" == localhost || "$host" == 127.* ]] && return 0
  ip -o -4 addr show 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | grep -qxF "$host"
}
if [[ $push -eq 1 ]] && ! registry_is_local; then
  die "registry $registry is not an address of this machine: start the local cluster first (hack/local-up.sh; docs/real-node.md), or pass --registry 127.0.0.1:<port> or --no-push"
fi

# Debian's sources as this machine has them (apt's own configuration, no host named here).
sources=""
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
  [[ -f "$f" ]] && sources+="$f "
done
[[ -n "$sources" ]] || die "no apt sources in /etc/apt: mmdebstrap needs Debian's"
sources_key="$(cat $sources | sha256sum | cut -c1-12)"
mmdebstrap_opts=(
  --variant=minbase --mode=root --format=directory
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --aptopt='APT::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
)

# rootfs KEY [PACKAGES]: a cached root filesystem; prints its directory.
rootfs() {
  local key="$1" packages="${2:-}" dir="$work/rootfs/$1"
  if [[ ! -f "$dir/.done" ]]; then
    rm -rf "$dir"
    local include=()
    [[ -n "$packages" ]] && include=(--include="${packages// /,}")
    # Twice: a name lookup of the Debian mirror fails now and then here.
    mmdebstrap "${mmdebstrap_opts[@]}" "${include[@]}" "$SUITE" "$dir" $sources \
      >"$work/rootfs/$key.log" 2>&1 \
      || { log "  mmdebstrap failed ($(grep -m1 '^E:' "$work/rootfs/$key.log")); once more"; rm -rf "$dir"
           mmdebstrap "${mmdebstrap_opts[@]}" "${include[@]}" "$SUITE" "$dir" $sources \
             >"$work/rootfs/$key.log" 2>&1; } \
      || die "mmdebstrap failed; its log: $work/rootfs/$key.log"
    touch "$dir/.done"
  fi
}

# --- layer 1: the base --------------------------------------------------------------------
base_key="base-$SUITE-$(echo "$sources_key ${mmdebstrap_opts[*]}" | sha256sum | cut -c1-12)"
base_layer="$work/layers/$base_key.tar.gz"
if [[ -f "$base_layer.json" ]]; then
  log "base layer cached ($base_key, $(human "$(stat -c %s "$base_layer")"))"
else
  step "Debian $SUITE minbase root filesystem (mmdebstrap, about 1.5 min; cached)" rootfs "$base_key"
  step "base layer" python3 "$oci_py" layer-dir "$work/rootfs/$base_key" "$base_layer" >/dev/null
fi

# --- layer 2: each image's Debian packages ------------------------------------------------
# with_users FROM TO "USER:GROUP ...": a copy of root filesystem FROM with these system
# users and groups added (the Dockerfile's SYSTEM_USERS, as its RUN useradd makes them).
with_users() {
  local from="$work/rootfs/$1" to="$work/rootfs/$2" ug
  [[ -f "$to/.done" ]] && return 0
  rm -rf "$to" && cp -a "$from" "$to" && rm -f "$to/.done"
  for ug in $3; do
    chroot "$to" getent group "${ug#*:}" >/dev/null || chroot "$to" groupadd --system "${ug#*:}"
    chroot "$to" useradd --system --gid "${ug#*:}" --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "${ug%%:*}"
  done
  touch "$to/.done"
}

packages_layer() { # COMPONENT -> prints the layer path, or nothing when it has no packages
  local packages users key tree layer
  packages="$(dockerfile_arg "$1" PACKAGES)"
  [[ -n "$packages" ]] || return 0
  users="$(dockerfile_arg "$1" SYSTEM_USERS)"
  key="pkgs-$(echo "$base_key $packages" | sha256sum | cut -c1-12)"
  tree="$key"
  [[ -z "$users" ]] || tree="$key-users-$(echo "$users" | sha256sum | cut -c1-8)"
  layer="$work/layers/$tree.tar.gz"
  if [[ ! -f "$layer.json" ]]; then
    rootfs "$base_key" # the diff needs the base tree
    step "$1: root filesystem with $packages (mmdebstrap; cached)" rootfs "$key" "$packages"
    [[ -z "$users" ]] || step "$1: system users $users" with_users "$key" "$tree" "$users"
    step "$1: packages layer" python3 "$oci_py" layer-diff "$work/rootfs/$base_key" "$work/rootfs/$tree" "$layer" >/dev/null
  fi
  echo "$layer"
}

# --- layer 3: our binaries ----------------------------------------------------------------
# The debug build is the workspace's own (`cargo build --workspace --bins`, as setup, the
# tests and local-up build it): a build of only these four packages unifies the crates'
# features differently and compiles kube and a dozen other crates a second time.
cargo_args=(build)
if [[ $profile == release ]]; then
  cargo_args+=(--release)
  for c in "${COMPONENTS[@]}"; do cargo_args+=(-p "$c" --bin "$c"); done
else
  cargo_args+=(--workspace --bins)
fi
# Quiet when it works; the compiler's whole complaint when it does not.
# Without SOURCE_DATE_EPOCH (set above for the layers): ring's and psm's build scripts
# watch it, so a build with it and the tests' build without it would each compile kube's
# TLS stack again.
cargo_build() {
  (cd "$FERROVIRT_ROOT" && env -u SOURCE_DATE_EPOCH cargo "${cargo_args[@]}" >"$work/cargo.log" 2>&1) \
    || die "cargo ${cargo_args[*]} failed:
$(tail -40 "$work/cargo.log")"
  tail -1 "$work/cargo.log" >&2
}
step "cargo ${cargo_args[*]}" cargo_build

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$FERROVIRT_ROOT/Cargo.toml" | head -1)"
revision="$(git -C "$FERROVIRT_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
git_tag="git-${revision:0:12}"
if [[ -n "$(git -C "$FERROVIRT_ROOT" status --porcelain 2>/dev/null)" ]]; then git_tag+="-dirty"; fi
source_url="$(git -C "$FERROVIRT_ROOT" remote get-url origin 2>/dev/null || echo "file://$FERROVIRT_ROOT")"
tags=("$version" dev "$git_tag")

# push LAYOUT REPOSITORY: pushes every tag (crane skips the blobs the registry has).
push_layout() {
  local layout="$1" repo="$2" first="$registry/$2:${tags[0]}"
  "$crane" push --insecure "$layout" "$first" >/dev/null 2>"$work/push.log" \
    || die "pushing $first failed (is the local cluster's registry up? hack/local-up.sh): $(tail -3 "$work/push.log")"
  for t in "${tags[@]:1}"; do "$crane" tag --insecure "$first" "$t" >/dev/null 2>>"$work/push.log"; done
}

summary=()
for c in "${COMPONENTS[@]}"; do
  t0=$SECONDS
  bin_dir="$work/bin/$c"
  rm -rf "$bin_dir" && mkdir -p "$bin_dir"
  strip -o "$bin_dir/$c" "$FERROVIRT_ROOT/target/$profile/$c"
  copied="/out/$c"
  if [[ $c == virt-launcher ]]; then
    # The disk containers' program, copied by the launcher pod's init container into the
    # FROM-scratch containerDisk containers (docs/contracts.md, "The launcher pod").
    gcc -static -Os -s -o "$bin_dir/container-disk" "$images_dir/container-disk.c" \
      || die "building container-disk.c failed: gcc and libc6-dev are needed (hack/setup.sh installs them)"
    copied+=" /out/container-disk"
  fi
  touch -d "@$SOURCE_DATE_EPOCH" "$bin_dir"/*
  bin_layer="$work/layers/bin-$c.tar.gz"
  python3 "$oci_py" layer-dir "$bin_dir" "$bin_layer" --under usr/local/bin --owner 0:0 >/dev/null
  layers=("$base_layer")
  history=("\"debian:$SUITE-slim equivalent (mmdebstrap minbase)\"")
  pkg_layer="$(packages_layer "$c")"
  if [[ -n "$pkg_layer" ]]; then
    layers+=("$pkg_layer")
    history+=("\"apt-get install --no-install-recommends $(dockerfile_arg "$c" PACKAGES)\"")
  fi
  layers+=("$bin_layer")
  history+=("\"COPY $copied /usr/local/bin/ ($profile build, stripped)\"")
  cat >"$work/$c.config.json" <<EOF
{
  "User": "$(dockerfile_user "$c")",
  "Entrypoint": $(dockerfile_entrypoint "$c"),
  "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
  "WorkingDir": "/",
  "Labels": {
    "org.opencontainers.image.title": "$c",
    "org.opencontainers.image.version": "$version",
    "org.opencontainers.image.revision": "$revision",
    "org.opencontainers.image.source": "$source_url",
    "org.opencontainers.image.licenses": "Apache-2.0",
    "org.opencontainers.image.vendor": "Ferrovirt"
  },
  "history": [$(IFS=,; echo "${history[*]}")]
}
EOF
  python3 "$oci_py" image "$work/oci/$c" --config "$work/$c.config.json" "${layers[@]}" >/dev/null
  [[ $push -eq 1 ]] && push_layout "$work/oci/$c" "ferrovirt/$c"
  total=0
  for l in "${layers[@]}"; do total=$((total + $(stat -c %s "$l"))); done
  line="$c: $(human "$total") compressed in ${#layers[@]} layers; our layer $(human "$(stat -c %s "$bin_layer")")"
  log "$line ($((SECONDS - t0))s)"
  summary+=("$line")
done

# --- containerDisk and kernel-boot images of the test guests -------------------------------
# Each entry of the image store (hack/build-guest-images.sh, docs/contracts.md) is the
# image's file tree: `FROM scratch` + `ADD disk.qcow2 /disk/` (or the kernel-boot files).
# A name with a registry host (quay.io/kubevirt/x) is pushed under its path (kubevirt/x):
# the node's containerd mirrors quay.io, docker.io, registry.k8s.io and ghcr.io to the
# local registry with the path unchanged (docs/real-node.md).
if [[ $guests -eq 1 ]]; then
  index="$FERROVIRT_CACHE/images/index.tsv"
  [[ -f "$index" ]] || die "no image store at $index: run hack/build-guest-images.sh"
  while IFS=$'\t' read -r ref dir; do
    t0=$SECONDS
    name="${ref%:*}" tag="${ref##*:}"
    [[ "$ref" == *:* && "$tag" != */* ]] || { name="$ref"; tag=latest; }
    first="${name%%/*}"
    if [[ "$name" == */* && ( "$first" == *.* || "$first" == *:* || "$first" == localhost ) ]]; then
      path="${name#*/}"
    else
      path="$name"
    fi
    key="guest-$(echo "$ref" | tr '/:' '__')"
    layer="$work/layers/$key.tar.gz"
    python3 "$oci_py" layer-dir "$dir" "$layer" --owner 0:0 >/dev/null
    cat >"$work/$key.config.json" <<EOF
{"Labels": {"org.opencontainers.image.title": "$ref", "org.opencontainers.image.source": "$source_url"},
 "history": ["ADD $(cd "$dir" && find . -type f | sed 's|^\./|/|' | tr '\n' ' ')"]}
EOF
    python3 "$oci_py" image "$work/oci/$key" --config "$work/$key.config.json" "$layer" >/dev/null
    if [[ $push -eq 1 ]]; then
      "$crane" push --insecure "$work/oci/$key" "$registry/$path:$tag" >/dev/null 2>"$work/push.log" \
        || die "pushing $registry/$path:$tag failed: $(tail -3 "$work/push.log")"
    fi
    log "guest $ref -> $registry/$path:$tag: $(human "$(stat -c %s "$layer")") ($((SECONDS - t0))s)"
  done <"$index"
fi

for line in "${summary[@]}"; do log "$line"; done
if [[ $push -eq 1 ]]; then
  log "pushed to $registry with tags ${tags[*]}"
else
  log "OCI layouts in $work/oci/ (not pushed)"
fi
