"""Rootless `bale bud --output type=tar|local`: the exported filesystem keeps
owners, setuid modes, xattrs and device numbers exactly as the OCI output of
the same build holds them (BuildKit's tar and local exporters write the
result's filesystem as it is: tonistiigi/fsutil tarwriter.go WriteTar sets
hdr.Uid/Gid, Devmajor/Devminor and SCHILY.xattr.* records from each stat)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile

import pytest

from builder.sandbox.idmap import subid_ranges
from tests.helpers.oci_reader import flatten, read_layout

pytestmark = [pytest.mark.slow, pytest.mark.rootless]

CAP = b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # v2, cap_net_bind_service
XATTRS = {"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.security.capability": CAP.decode("utf-8", "surrogateescape")}


def _extra_layer() -> bytes:
    """A layer with what no busybox RUN can make: xattrs (user.* and a file capability) and a device."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add(name: str, kind: bytes, data: bytes = b"", **kw: object) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.size = kind, 0o755, 1700000000, len(data)
            for k, v in kw.items():
                setattr(ti, k, v)
            t.addfile(ti, io.BytesIO(data) if data else None)
        add("caps", tarfile.REGTYPE, b"#!/bin/sh\n", pax_headers=dict(XATTRS))
        add("removed", tarfile.REGTYPE, b"gone soon\n")
        add("devs", tarfile.DIRTYPE)
        add("devs/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
    return buf.getvalue()


def _add_layer(layout, raw: bytes) -> None:
    """Append an uncompressed-then-gzipped layer to the image ``latest`` of an OCI layout."""
    def put(data: bytes) -> dict:
        d = hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / d).write_bytes(data)
        return {"digest": "sha256:" + d, "size": len(data)}
    index = json.loads((layout / "index.json").read_text())
    desc = index["manifests"][0]
    manifest = json.loads((layout / "blobs" / "sha256" / desc["digest"][7:]).read_bytes())
    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_bytes())
    config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(raw).hexdigest())
    config["history"].append({"created_by": "test: xattrs and a device"})
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                               **put(gzip.compress(raw, mtime=0))})
    manifest["config"].update(put(json.dumps(config).encode()))
    desc.update(put(json.dumps(manifest).encode()))
    (layout / "index.json").write_text(json.dumps(index))


@pytest.fixture
def built(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    lay = user_tmp / "xbase-layout"
    shutil.copytree(busybox_layout, lay)
    _add_layer(lay, _extra_layer())
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM xbase\n"
        "RUN touch /x && chown 1234:4321 /x && chmod 4755 /x && rm /removed && mkdir /d && chown 7:8 /d\n")
    for p in [lay, *lay.rglob("*"), ctx, *ctx.rglob("*")]:
        os.lchown(p, u.uid, u.gid)
    root = user_tmp / "store"
    image_id = u.bale("pull", "-q", f"oci:{lay}:latest", root=root).stdout.strip()
    u.bale("tag", image_id, "xbase", root=root)
    r = u.bale("bud", "-q", "-t", "xout", "--output", f"type=tar,dest={user_tmp}/fs.tar", "--output", f"type=oci,dest={user_tmp}/oci",
               "--output", f"type=local,dest={user_tmp}/rootfs", str(ctx), root=root)
    return u, user_tmp, r


def test_rootless_tar_output_keeps_owner_setuid_xattrs_and_devices(built):
    u, tmp, _ = built
    with tarfile.open(tmp / "fs.tar") as t:
        members = {m.name.rstrip("/"): m for m in t.getmembers()}
    x = members["x"]
    assert (x.uid, x.gid, x.mode) == (1234, 4321, 0o4755)
    assert (members["d"].uid, members["d"].gid) == (7, 8)
    caps = members["caps"].pax_headers
    assert caps["SCHILY.xattr.user.note"] == "hello"
    assert caps["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == CAP
    dev = members["devs/null"]
    assert dev.ischr() and (dev.devmajor, dev.devminor, dev.mode) == (1, 3, 0o666)
    assert "removed" not in members and "bin/busybox" in members
    # every entry exactly as the OCI output of the same build has it
    _, _, layers = read_layout(tmp / "oci", "latest")
    fs = flatten(layers)
    assert sorted("/" + n for n in members) == sorted(fs)
    for path, e in fs.items():
        m = members[path[1:]]
        want = {k: v for k, v in e.info.pax_headers.items() if k.startswith("SCHILY.xattr.")}
        got = {k: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
        assert (m.uid, m.gid, m.mode, m.type, m.linkname, m.devmajor, m.devminor, got) == \
            (e.info.uid, e.info.gid, e.info.mode, e.info.type, e.info.linkname.lstrip("./") if m.islnk()
             else e.info.linkname, e.info.devmajor, e.info.devminor, want), path


def test_rootless_local_output_owners_are_the_mapped_subordinate_ids(built):
    u, tmp, r = built
    (start, _count), = subid_ranges(u.name, "/etc/subuid")
    (gstart, _gcount), = subid_ranges(u.name, "/etc/subgid")
    st = os.lstat(tmp / "rootfs" / "x")
    # container id N > 0 is host id start + N - 1 (0 is the user; podman's and buildah's mapping)
    assert (st.st_uid, st.st_gid) == (start + 1233, gstart + 4320)
    assert st.st_mode & 0o7777 == 0o4755
    assert os.getxattr(tmp / "rootfs" / "caps", "user.note") == b"hello"
    assert os.lstat(tmp / "rootfs" / "bin" / "busybox").st_uid == u.uid  # container root is the user
    assert not os.path.lexists(tmp / "rootfs" / "removed")
    assert "devs/null" in r.stderr  # a user namespace may not mknod: said, not silent


def test_single_id_mapping_tar_keeps_owners_local_fails_on_chown(unmapped_user, tmp_path, busybox_layout):
    """With only the user's own id mapped (no /etc/subuid range), a tar still carries 1234:4321
    (it is written from the layers, no chown involved); a local export cannot chown and says so."""
    from tests.fixtures.users import make_traversable
    u = unmapped_user
    make_traversable(tmp_path)
    tmp = u.tmpdir(tmp_path)
    lay = tmp / "layout"
    shutil.copytree(busybox_layout, lay)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        ti = tarfile.TarInfo("owned")
        ti.uid, ti.gid, ti.mode, ti.size = 1234, 4321, 0o4755, 3
        t.addfile(ti, io.BytesIO(b"hi\n"))
    _add_layer(lay, buf.getvalue())
    ctx = tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM xbase\nLABEL exported=yes\n")
    for p in [lay, *lay.rglob("*"), ctx, *ctx.rglob("*")]:
        os.lchown(p, u.uid, u.gid)
    root = tmp / "store"
    image_id = u.bale("pull", "-q", f"oci:{lay}:latest", root=root).stdout.strip()
    u.bale("tag", image_id, "xbase", root=root)
    u.bale("bud", "-q", "--output", f"type=tar,dest={tmp}/fs.tar", str(ctx), root=root)
    with tarfile.open(tmp / "fs.tar") as t:
        m = t.getmember("owned")
        assert (m.uid, m.gid, m.mode) == (1234, 4321, 0o4755)
    r = u.bale("bud", "-q", "--output", f"type=local,dest={tmp}/rootfs", str(ctx), root=root, check=False)
    err = [l for l in r.stderr.strip().splitlines() if "WARNING: no subuid range" not in l]
    assert r.returncode == 1 and len(err) == 1, r.stderr
    # busybox's /home/app (1000:1000) is the first file it cannot give its owner
    assert err[0].startswith(f"bale: --output type=local,dest={tmp}/rootfs: ") and "home/app" in err[0] and \
        "cannot set owner" in err[0] and "Traceback" not in r.stderr, err[0]
