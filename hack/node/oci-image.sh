#!/usr/bin/env bash
# Makes a one-layer OCI image offline, without a registry or a container engine:
#   oci-image.sh REF ROOTFS_DIR OUT_DIR ENTRYPOINT...
# writes the OCI layout OUT_DIR/ (for `crane push OUT_DIR <registry>/<name>:<tag>`) and
# OUT_DIR.tar (for `ctr -n k8s.io images import --platform linux/amd64 OUT_DIR.tar`; its
# index.json names the image REF through the io.containerd.image.name annotation).
# The layer is reproducible: sorted entries, owner root, mtime 0, gzip without a timestamp.
set -euo pipefail
[[ $# -ge 4 ]] || { echo "usage: $0 REF ROOTFS_DIR OUT_DIR ENTRYPOINT..." >&2; exit 2; }
ref="$1" rootfs="$2" out="$3"; shift 3
[[ -d "$rootfs" ]] || { echo "$0: no rootfs directory $rootfs" >&2; exit 1; }

tmp="$out.tmp"
rm -rf "$tmp" "$out" "$out.tar"
mkdir -p "$tmp/blobs/sha256"
blob() { # file -> prints "digest size", moves the file into blobs/
  local d s
  d="$(sha256sum "$1" | cut -d' ' -f1)"
  s="$(stat -c %s "$1")"
  mv "$1" "$tmp/blobs/sha256/$d"
  echo "$d $s"
}

tar -C "$rootfs" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$tmp/layer.tar" .
diff_id="$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)"
gzip -n -9 "$tmp/layer.tar"
read -r layer layer_size < <(blob "$tmp/layer.tar.gz")

entry="$(printf '"%s",' "$@")"
printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":[%s],"Env":["PATH=/bin:/sbin:/usr/bin:/usr/sbin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"hack/node/oci-image.sh"}]}' \
  "${entry%,}" "$diff_id" >"$tmp/config.json"
read -r config config_size < <(blob "$tmp/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
  "$config" "$config_size" "$layer" "$layer_size" >"$tmp/manifest.json"
read -r manifest manifest_size < <(blob "$tmp/manifest.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$manifest" "$manifest_size" "$ref" "${ref##*:}" >"$tmp/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$tmp/oci-layout"

tar -C "$tmp" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$out.tar.tmp" .
mv "$tmp" "$out"
mv "$out.tar.tmp" "$out.tar"
