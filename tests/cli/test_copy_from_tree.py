"""COPY --from of a 2,000-file tree (issue 10): the direct snapshot-to-snapshot copy gives BuildKit's
filesystem. The builder stage holds hard links, relative, absolute and dangling symlinks, empty
directories, a 0700 directory, a set-uid file, user.* xattrs and files of several owners (made by
RUN chown); the final stage copies it with and without --chown. Read back with Python's tarfile
(the two COPY layers themselves, and the flattened image), and compared with Debian's buildah
(overlay storage), which agrees with BuildKit on every entry checked here: type, owner, mode,
content, link target, xattrs and hard-link groups.

BuildKit (moby/buildkit 73ed6825, tonistiigi/fsutil 6d9dc2eb): solver/llbsolver/file/backend.go:206-215
docopy passes ``ci.Chown = ch``, nil without --chown, so fsutil copy/copy_unix.go:18-30 copyFileInfo
keeps the source's uid/gid (``cp -a``) and its mode, set-uid included (copy_unix.go:32-51); symlinks
are recreated with their target as it is (copy/copy.go:447-454), hard links within the copy stay
hard links (copy.go:436-446, hardlink.go getLinkSource), xattrs are copied (copy.go:469, with
--chown too), and the destination directory is made by MkdirAll with the --chown owner, 0755
(copy.go:77-93)."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.oci_reader import Entry, flatten, read_layout

pytestmark = [pytest.mark.slow]

FILES = 2000

DOCKERFILE = """FROM busybox AS b
COPY tree /tree
RUN chown -R 1001:1002 /tree/d001 && chown 2000:3000 /tree/d002/f40 /tree/d002 && \\
    chmod 4755 /tree/d003/f60 && chmod 2750 /tree/d004 && \\
    mkdir -m 0700 /tree/private && echo secret > /tree/private/s && chown 5:6 /tree/private/s && \\
    mkdir -p /tree/hl /tree/empty-run && ln /tree/d000/f0 /tree/hl/a && ln /tree/d000/f0 /tree/hl/b && \\
    ln /tree/d001/f20 /tree/hl/c && \\
    ln -s ../d000/f1 /tree/hl/rel && ln -s /tree/d000/f2 /tree/hl/abs && ln -s /nowhere/at/all /tree/hl/dangling && \
    rm /tree/d006/f120 && rm -r /tree/d007 && rm -r /tree/d008 && mkdir /tree/d008 && echo new > /tree/d008/n
FROM busybox
COPY --from=b /tree /t1
COPY --from=b --chown=7:8 /tree /t2
"""


def _context(u: Any, ctx: Path) -> None:
    tree = ctx / "tree"
    for i in range(FILES):
        d = tree / f"d{i // 20:03d}"
        if i % 20 == 0:
            d.mkdir(parents=True)
        (d / f"f{i}").write_bytes(f"file {i}\n".encode() * (1 + i % 7))
    (tree / "empty").mkdir()
    for p in [ctx, *ctx.rglob("*")]:
        os.lchown(p, u.uid, u.gid)
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    os.setxattr(tree / "d000" / "f3", "user.note", b"kept")
    os.setxattr(tree / "d005", "user.dir", b"on a directory")


def _row(fs: dict[str, Entry], p: str) -> tuple[object, ...]:
    i = fs[p].info
    kind = "dir" if i.isdir() else "sym" if i.issym() else "file" if i.isreg() or i.islnk() else "other"
    xattrs = {k: v for k, v in i.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    return kind, i.uid, i.gid, i.mode & 0o7777, fs[p].content, i.linkname if i.issym() else "", xattrs


def _links(layer: bytes) -> dict[str, set[str]]:
    """Hard-link groups of one layer: the regular entry's name -> the names linked to it."""
    out: dict[str, set[str]] = {}
    with tarfile.open(fileobj=io.BytesIO(layer)) as t:
        for m in t.getmembers():
            if m.islnk():
                out.setdefault("/" + m.linkname.strip("/"), set()).add("/" + m.name.strip("/"))
    return out


def _groups(layer: bytes) -> set[frozenset[str]]:
    return {frozenset({k, *v}) for k, v in _links(layer).items()}


@pytest.mark.parametrize("driver", ["overlay", "native"])
def test_copy_from_tree_as_buildkit_and_buildah(unprivileged_user, user_tmp, busybox_layout, driver):
    """Under overlay the builder's RUN layer holds whiteouts (a removed file, a removed directory)
    and an opaque directory: the copy reads the stage as its rootfs shows it, none of them."""
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    _context(u, ctx)
    u.bale("--storage-driver", driver, "bud", "-q", "-t", "tree", str(ctx), root=root, timeout=600)
    u.bale("push", "tree", f"oci:{user_tmp}/out:latest", root=root)
    _, _, layers = read_layout(user_tmp / "out", "latest")
    fs = flatten(layers)
    t1, t2 = layers[-2], layers[-1]

    for top, owned in (("/t1", None), ("/t2", (7, 8))):
        names = [p for p in fs if p.startswith(top + "/")]
        assert len(names) >= FILES  # 1,960 files, 99 directories, the links
        expect: dict[str, tuple[object, ...]] = {
            top: ("dir", 0, 0, 0o755),  # MkdirAll, --chown owner
            f"{top}/d000/f0": ("file", 0, 0, 0o644),
            f"{top}/d001": ("dir", 1001, 1002, 0o755),
            f"{top}/d001/f21": ("file", 1001, 1002, 0o644),
            f"{top}/d002": ("dir", 2000, 3000, 0o755),
            f"{top}/d002/f40": ("file", 2000, 3000, 0o644),
            f"{top}/d002/f41": ("file", 0, 0, 0o644),
            f"{top}/d003/f60": ("file", 0, 0, 0o4755),
            f"{top}/d004": ("dir", 0, 0, 0o2750),
            f"{top}/private": ("dir", 0, 0, 0o700),
            f"{top}/private/s": ("file", 5, 6, 0o644),
            f"{top}/empty": ("dir", 0, 0, 0o755),
            f"{top}/empty-run": ("dir", 0, 0, 0o755),
            f"{top}/hl/rel": ("sym", 0, 0, 0o777),
            f"{top}/hl/abs": ("sym", 0, 0, 0o777),
            f"{top}/hl/dangling": ("sym", 0, 0, 0o777),
        }
        for p, (kind, uid, gid, mode) in expect.items():
            if owned:
                uid, gid = owned
            assert _row(fs, p)[:4] == (kind, uid, gid, mode), p
        assert fs[f"{top}/hl/rel"].info.linkname == "../d000/f1"
        assert fs[f"{top}/hl/abs"].info.linkname == "/tree/d000/f2"  # as it is: not rebased onto /t1
        assert fs[f"{top}/hl/dangling"].info.linkname == "/nowhere/at/all"
        assert fs[f"{top}/private/s"].content == b"secret\n"
        assert fs[f"{top}/d000/f3"].info.pax_headers.get("SCHILY.xattr.user.note") == "kept"
        assert fs[f"{top}/d005"].info.pax_headers.get("SCHILY.xattr.user.dir") == "on a directory"
        assert f"{top}/d006/f121" in fs and f"{top}/d006/f120" not in fs and f"{top}/d007" not in fs
        assert sorted(p for p in names if p.startswith(f"{top}/d008")) == [f"{top}/d008", f"{top}/d008/n"]
        if owned:
            assert {(fs[p].info.uid, fs[p].info.gid) for p in names} == {owned}
    # hard links stay hard links within each copy: one regular entry, the others LNKTYPE to it
    for layer, top in ((t1, "t1"), (t2, "t2")):
        assert _groups(layer) == {frozenset({f"/{top}/d000/f0", f"/{top}/hl/a", f"/{top}/hl/b"}),
                                  frozenset({f"/{top}/d001/f20", f"/{top}/hl/c"})}
        with tarfile.open(fileobj=io.BytesIO(layer)) as t:
            kinds = {m.name.strip("/").removeprefix("./"): m for m in t.getmembers()}
        assert kinds[f"{top}/d000/f0"].isreg() and kinds[f"{top}/d000/f0"].size == len(b"file 0\n")
        assert all(m.isreg() or m.isdir() or m.issym() or m.islnk() for m in kinds.values())
        assert not any(n.rsplit("/", 1)[-1].startswith(".wh.") for n in kinds)

    # buildah (overlay storage, rootless) builds the same entries
    layout = user_tmp / "busybox-layout"
    bh = ["buildah", "--root", str(user_tmp / "bh-root"), "--runroot", str(user_tmp / "bh-run"),
          "--storage-driver", "overlay"]
    image = u.run([*bh, "pull", "-q", f"oci:{layout}:latest"]).stdout.strip().splitlines()[-1]
    u.run([*bh, "tag", image, "busybox"])
    u.run([*bh, "bud", "-q", "--isolation", "chroot", "-t", "tree", str(ctx)], timeout=600)
    u.run([*bh, "push", "tree", f"oci:{user_tmp}/bh-out:latest"])
    _, _, bh_layers = read_layout(user_tmp / "bh-out", "latest")
    fs_bh = flatten(bh_layers)
    u.run([*bh, "rmi", "-a", "-f"], check=False)
    paths = sorted(p for p in fs_bh if p.startswith(("/t1", "/t2")))
    assert len(paths) == len([p for p in fs if p.startswith(("/t1", "/t2"))])
    assert {p: _row(fs, p) for p in paths} == {p: _row(fs_bh, p) for p in paths}
    # buildah without --layers commits the stage's two COPY steps as one layer
    assert _groups(bh_layers[-1]) == _groups(t1) | _groups(t2)
