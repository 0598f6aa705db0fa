#!/usr/bin/env python3
"""Writes OCI image layers and layouts without a container engine (hack/build-images.sh).

  oci.py layer-dir ROOT OUT.tar.gz [--under PREFIX] [--owner UID:GID]
      a layer holding the tree ROOT (at PREFIX inside the image)
  oci.py layer-diff BASE TOP OUT.tar.gz
      a layer that turns rootfs BASE into rootfs TOP: what is new or changed in TOP,
      with the parent directories, and a whiteout for each path TOP no longer has
  oci.py image LAYOUT --config CONFIG.json LAYER.tar.gz...
      an OCI image layout in LAYOUT holding one image of the layers, in that order, with
      the config fields of CONFIG.json (User, Entrypoint, Env, Labels, history)

Every layer is reproducible: entries sorted, numeric owners, no user or group names, modes
and contents as on disk, mtimes clamped to SOURCE_DATE_EPOCH, gzip without a name or time.
Beside OUT.tar.gz, OUT.json records its digest, diff_id (the uncompressed tar's digest) and
size. Device nodes, sockets and fifos are left out (a container runtime makes /dev).
"""

import argparse
import filecmp
import gzip
import hashlib
import json
import os
import shutil
import stat
import sys
import tarfile
import time

EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
SKIP_CONTENT = ("dev", "proc", "sys")  # kept as directories, their contents left out


class HashingWriter:
    """A file object that hashes what goes through it (the diff_id)."""

    def __init__(self, inner):
        self.inner = inner
        self.sha = hashlib.sha256()

    def write(self, data):
        self.sha.update(data)
        return self.inner.write(data)

    def flush(self):
        self.inner.flush()


def skipped(rel):
    top = rel.split("/", 1)
    return len(top) == 2 and top[0] in SKIP_CONTENT


def walk(root):
    """Relative paths of every entry under root, parents first."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if not skipped(rel):
                out.append(rel)
    return out


class LayerWriter:
    def __init__(self, out, owner=None):
        self.out = out
        self.owner = owner
        self.raw = open(out + ".tmp", "wb")
        self.gz = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, compresslevel=6, mtime=0)
        self.hashing = HashingWriter(self.gz)
        self.tar = tarfile.open(fileobj=self.hashing, mode="w|", format=tarfile.PAX_FORMAT)

    def add(self, full, arcname):
        st = os.lstat(full)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            return
        info = self.tar.gettarinfo(full, arcname=arcname)
        self.normalise(info)
        if info.isreg():
            with open(full, "rb") as f:
                self.tar.addfile(info, f)
        else:
            self.tar.addfile(info)

    def whiteout(self, arcname):
        head, name = os.path.split(arcname)
        info = tarfile.TarInfo(os.path.join(head, ".wh." + name))
        info.mode = 0o644
        self.normalise(info)
        self.tar.addfile(info)

    def normalise(self, info):
        info.uname = info.gname = ""
        if self.owner is not None:
            info.uid, info.gid = self.owner
        info.mtime = int(min(info.mtime, EPOCH)) if EPOCH else int(info.mtime)

    def close(self):
        self.tar.close()
        self.gz.close()
        self.raw.close()
        digest = sha256_file(self.out + ".tmp")
        os.replace(self.out + ".tmp", self.out)
        meta = {
            "digest": "sha256:" + digest,
            "diff_id": "sha256:" + self.hashing.sha.hexdigest(),
            "size": os.path.getsize(self.out),
        }
        with open(self.out + ".json", "w") as f:
            json.dump(meta, f)
        return meta


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def layer_dir(args):
    owner = tuple(int(x) for x in args.owner.split(":")) if args.owner else None
    w = LayerWriter(args.out, owner)
    prefix = args.under.strip("/")
    parts = prefix.split("/") if prefix else []
    for i in range(len(parts)):  # the directories above the tree
        w.add(args.root, "/".join(parts[: i + 1]))
    for rel in walk(args.root):
        w.add(os.path.join(args.root, rel), os.path.join(prefix, rel) if prefix else rel)
    return w.close()


def same(base, top):
    a, b = os.lstat(base), os.lstat(top)
    if (a.st_mode, a.st_uid, a.st_gid) != (b.st_mode, b.st_uid, b.st_gid):
        return False
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(base) == os.readlink(top)
    if stat.S_ISREG(a.st_mode):
        return a.st_size == b.st_size and filecmp.cmp(base, top, shallow=False)
    return True


def layer_diff(args):
    w = LayerWriter(args.out)
    top_paths = walk(args.top)
    changed = set()
    for rel in top_paths:
        base = os.path.join(args.base, rel)
        if not os.path.lexists(base) or not same(base, os.path.join(args.top, rel)):
            changed.add(rel)
            parent = os.path.dirname(rel)
            while parent and parent not in changed:
                changed.add(parent)
                parent = os.path.dirname(parent)
    top_set = set(top_paths)
    gone = []
    gone_set = set()
    for rel in walk(args.base):
        if rel in top_set:
            continue
        gone_set.add(rel)
        parent = os.path.dirname(rel)  # only the topmost removed path needs a whiteout
        while parent and parent not in gone_set:
            parent = os.path.dirname(parent)
        if not parent:
            gone.append(rel)
    entries = sorted([(rel, False) for rel in changed] + [(rel, True) for rel in gone])
    for rel, is_gone in entries:
        if is_gone:
            w.whiteout(rel)
        else:
            w.add(os.path.join(args.top, rel), rel)
    meta = w.close()
    meta["changed"], meta["removed"] = len(changed), len(gone)
    return meta


def put_blob(layout, path_or_bytes, digest=None):
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    if isinstance(path_or_bytes, bytes):
        digest = hashlib.sha256(path_or_bytes).hexdigest()
        dest = os.path.join(blobs, digest)
        with open(dest, "wb") as f:
            f.write(path_or_bytes)
        return "sha256:" + digest, len(path_or_bytes)
    dest = os.path.join(blobs, digest.split(":", 1)[1])
    if not os.path.exists(dest):
        try:
            os.link(path_or_bytes, dest)
        except OSError:
            shutil.copyfile(path_or_bytes, dest)
    return digest, os.path.getsize(dest)


def image(args):
    with open(args.config) as f:
        spec = json.load(f)
    if os.path.exists(args.layout):
        shutil.rmtree(args.layout)
    os.makedirs(args.layout)
    layers, diff_ids = [], []
    for layer in args.layers:
        with open(layer + ".json") as f:
            meta = json.load(f)
        digest, size = put_blob(args.layout, layer, meta["digest"])
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
        diff_ids.append(meta["diff_id"])
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))
    history = [{"created": created, "created_by": h} for h in spec.pop("history")]
    if len(history) != len(layers):
        sys.exit(f"oci.py: {len(history)} history entries for {len(layers)} layers")
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": spec,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest, config_size = put_blob(args.layout, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layers,
        "annotations": {k: v for k, v in spec.get("Labels", {}).items() if k.startswith("org.opencontainers.image.")},
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest, manifest_size = put_blob(args.layout, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    }
    with open(os.path.join(args.layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(args.layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return {"manifest": manifest_digest, "size": sum(l["size"] for l in layers) + config_size}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("layer-dir")
    d.add_argument("root")
    d.add_argument("out")
    d.add_argument("--under", default="")
    d.add_argument("--owner")
    d.set_defaults(run=layer_dir)
    f = sub.add_parser("layer-diff")
    f.add_argument("base")
    f.add_argument("top")
    f.add_argument("out")
    f.set_defaults(run=layer_diff)
    i = sub.add_parser("image")
    i.add_argument("layout")
    i.add_argument("--config", required=True)
    i.add_argument("layers", nargs="+")
    i.set_defaults(run=image)
    args = p.parse_args()
    print(json.dumps(args.run(args)))


if __name__ == "__main__":
    main()
