#!/usr/bin/env python3
"""Make a busybox base image as an OCI layout from Debian's busybox-static, offline.

    python3 examples/make-busybox-image.py DIR      # then: bale pull oci:DIR:latest

Uses only the standard library, so it is an independent writer of the format
that bale reads.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile

BUSYBOX = "/bin/busybox"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
EPOCH = 1700000000


def applets() -> list[str]:
    out = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout
    return sorted(a for a in out.split() if a and a != "busybox")


def add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, mode: int = 0o755,
        kind: bytes = tarfile.REGTYPE, link: str = "", uid: int = 0, gid: int = 0) -> None:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.linkname = kind, mode, uid, gid, EPOCH, link
    ti.size = len(data) if data is not None else 0
    tar.addfile(ti, io.BytesIO(data) if data is not None else None)


def layer_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "etc", "home", "root", "tmp", "usr", "usr/bin", "var"):
            add(tar, d, kind=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else (0o700 if d == "root" else 0o755))
        add(tar, "home/app", kind=tarfile.DIRTYPE, uid=1000, gid=1000)
        with open(BUSYBOX, "rb") as fh:
            add(tar, "bin/busybox", data=fh.read())
        for a in applets():
            add(tar, f"bin/{a}", kind=tarfile.SYMTYPE, link="busybox", mode=0o777)
        add(tar, "etc/passwd", mode=0o644, data=b"root:x:0:0:root:/root:/bin/sh\n"
            b"app:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add(tar, "etc/group", mode=0o644, data=b"root:x:0:\napp:x:1000:\nnogroup:x:65534:\n")
    return buf.getvalue()


def write_blob(layout: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as fh:
        fh.write(data)
    return "sha256:" + digest


def write_layout(layout: str, raw: bytes, created_by: str, *, compresslevel: int = 9) -> None:
    """A one-layer image as an OCI layout in the directory ``layout`` (made if missing), named
    ``latest`` in its index.json: the layer tar ``raw`` gzip-compressed (``compresslevel``), a
    config (PATH, ``Cmd ["sh"]``, one history entry ``created_by``) and the manifest."""
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    gz = gzip.compress(raw, compresslevel=compresslevel, mtime=0)
    layer = write_blob(layout, gz)
    config = json.dumps({
        "architecture": ARCH, "os": "linux", "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": created_by}],
    }, sort_keys=True).encode()
    cfg = write_blob(layout, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": len(gz)}],
    }, sort_keys=True).encode()
    man = write_blob(layout, manifest)
    with open(os.path.join(layout, "oci-layout"), "w") as fh:
        json.dump({"imageLayoutVersion": "1.0.0"}, fh)
    with open(os.path.join(layout, "index.json"), "w") as fh:
        json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man, "size": len(manifest),
             "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, fh)


def main(layout: str) -> None:
    write_layout(layout, layer_tar(), "busybox-static from Debian")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make-busybox-image.py LAYOUT_DIR")
    main(sys.argv[1])
