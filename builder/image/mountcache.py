"""RUN ``--mount=type=cache`` contents through the remote cache (``--cache-to REPO,mounts=true``
and ``--cache-from REPO,mounts=true``): each of the store's cache mounts (``ROOT/cache-mounts/
NAME``, NAME = the first 24 hex digits of sha256(id or target), as builder.workspace.cachemounts
names a cache id's first instance; the further instances, ``NAME-2``..., that ``private`` and
``locked`` RUNs made while it was held stay local) is pushed after the build as a one-layer image
tagged ``mount-NAME``, and pulled before the build into a store that does not have that mount yet.

The layer is an uncompressed tar of the directory's contents with numeric owners, made and
unpacked where the sandbox's ids apply (Runtime.call: inside the user namespace when
rootless), so files keep the owners RUN gave them. Unpacking refuses absolute names, ``..``
and any entry whose parent resolves (through a symlink of the archive) outside the mount."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import BaleError
from builder.image.oci import (OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Descriptor, parse_config, parse_manifest,
                               sha256_digest)
from builder.workspace.cachemounts import is_first_instance

if TYPE_CHECKING:
    from builder.image.reference import ImageReference
    from builder.image.remotecache import RemoteCache
    from builder.workspace.runtime import Runtime

log = logging.getLogger("bale")
MOUNT_LABEL = "io.bale.cache.mount"
TAG_PREFIX = "mount-"


def pack_dir(src: str, out: str) -> dict[str, object]:
    """Tar the contents of ``src`` into ``out`` (numeric owners); returns {digest, size}."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(os.listdir(src)):
            tf.add(os.path.join(src, name), arcname=name, recursive=True)
    h = hashlib.sha256()
    with open(out, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return {"digest": "sha256:" + h.hexdigest(), "size": os.path.getsize(out)}


def unpack_dir(archive: str, dest: str) -> int:
    """Extract ``archive`` into the new directory ``dest`` (through ``dest.part``, renamed at the
    end, so a failed extraction leaves no half mount); returns the number of entries."""
    final, dest = dest, dest + ".part"
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    root = os.path.realpath(dest)
    n = 0
    with tarfile.open(archive, "r:") as tf:
        for m in tf:
            parts = m.name.split("/")
            if m.name.startswith("/") or ".." in parts:
                raise BaleError(f"cache mount archive: unsafe entry {m.name!r}")
            parent = os.path.realpath(os.path.join(dest, os.path.dirname(m.name)))
            if parent != root and not parent.startswith(root + "/"):
                raise BaleError(f"cache mount archive: entry {m.name!r} leaves the mount")
            if m.islnk() and (m.linkname.startswith("/") or ".." in m.linkname.split("/")):
                raise BaleError(f"cache mount archive: unsafe hard link {m.name!r}")
            tf.extract(m, dest, set_attrs=True, numeric_owner=True)
            n += 1
    os.rename(dest, final)
    return n


def export_mounts(cache: "RemoteCache", rt: "Runtime", root: Path) -> list[str]:
    """Push every cache mount of the store to the --cache-to repository; returns the names."""
    ref = cache.target
    mounts = root / "cache-mounts"
    if ref is None or not mounts.is_dir():
        return []
    done = []
    for d in sorted(p for p in mounts.iterdir() if p.is_dir() and is_first_instance(p.name)):
        tmp = cache.store.tmp_dir / f"mount-{d.name}.tar"
        try:
            info = rt.call(pack_dir, str(d), str(tmp))
            _push(cache, ref, d.name, tmp, str(info["digest"]), int(info["size"]))
            done.append(d.name)
        except BaleError as exc:
            log.warning("--cache-to %s: cache mount %s: %s (the build goes on)", ref.repo_name, d.name, exc)
        finally:
            tmp.unlink(missing_ok=True)
    return done


def _push(cache: "RemoteCache", ref: "ImageReference", name: str, tar: Path, digest: str, size: int) -> None:
    client = cache._client(ref.registry)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {MOUNT_LABEL: name}},
                      "rootfs": {"type": "layers", "diff_ids": [digest]}}, sort_keys=True).encode()
    cfg_desc = Descriptor(OCI_CONFIG, sha256_digest(cfg), len(cfg))
    client.push_blob(ref.repository, cfg_desc, lambda off: io.BytesIO(cfg[off:]))
    layer = Descriptor(OCI_LAYER, digest, size)

    def open_at(off: int) -> "io.BufferedReader":
        fh = open(tar, "rb")
        fh.seek(off)
        return fh
    client.push_blob(ref.repository, layer, open_at)
    man = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg_desc.to_json(), "layers": [layer.to_json()]}
    client.put_manifest(ref.repository, TAG_PREFIX + name, json.dumps(man).encode(), OCI_MANIFEST)
    log.info("cache mount %s to %s", name, ref.repo_name)


def import_mounts(cache: "RemoteCache", rt: "Runtime", root: Path) -> list[str]:
    """Pull the cache mounts of the --cache-from repositories that this store lacks."""
    got: list[str] = []
    for ref in cache.sources:
        try:
            client = cache._client(ref.registry)
            tags = [t for t in client.list_tags(ref.repository) if t.startswith(TAG_PREFIX)]
        except BaleError as exc:
            log.warning("--cache-from %s: %s (no cache mounts from there)", ref.repo_name, exc)
            continue
        for tag in tags:
            name = tag[len(TAG_PREFIX):]
            dest = root / "cache-mounts" / name
            if not is_first_instance(name) or dest.exists() or name in got:
                continue
            tmp = cache.store.tmp_dir / f"mount-in-{name}.tar"
            try:
                import io
                data, _, _ = client.get_manifest(ref.repository, tag)
                man = parse_manifest(data, f"cache mount {ref.repo_name}:{tag}")
                buf = io.BytesIO()
                client.fetch_blob(ref.repository, man.config, buf)
                if (parse_config(buf.getvalue()).config.get("Labels") or {}).get(MOUNT_LABEL) != name:
                    continue
                with open(tmp, "wb") as fh:
                    client.fetch_blob(ref.repository, man.layers[0], fh)
                dest.parent.mkdir(parents=True, exist_ok=True)
                rt.call(unpack_dir, str(tmp), str(dest))
                got.append(name)
                log.info("cache mount %s from %s", name, ref.repo_name)
            except BaleError as exc:
                log.warning("--cache-from %s: cache mount %s: %s (starts empty)", ref.repo_name, name, exc)
            finally:
                tmp.unlink(missing_ok=True)
    return got
