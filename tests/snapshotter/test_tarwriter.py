"""The layer-diff tar writer (snapshotter/tarwriter.py) writes exactly what Python's tarfile
writes (``tarfile.open(mode="w|", format=PAX_FORMAT)`` + ``addfile``, which bale used before):
header by header over the edge cases of every field, and stream by stream for a tree of every
entry kind, whether the output is a BytesIO, a regular file or a pipe (bodies sent by the
kernel). tarfile is the independent writer and reader here."""
import io
import os
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from snapshotter.diff import Change, write_tar
from snapshotter.errors import SnapshotError
from snapshotter.tarwriter import SMALL_BODY, TarStream, tar_header

TYPES = [tarfile.REGTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.DIRTYPE,
         tarfile.FIFOTYPE]
NAMES = ["a", "dir/sub/file.py", "n" * 100, "n" * 101, "d" * 99, "x/" * 60 + "y", "héllo", "bad\udcff\udcfename",
         "sp ace", ""]
LINKS = ["", "target", "t" * 100, "t" * 101, "ünï", "../up\udcfe"]
IDS = [0, 1000, 8 ** 7 - 1, 8 ** 7, 3_000_000_000]
SIZES = [0, 1, 8 ** 11 - 1, 8 ** 11]
MTIMES = [0, 1_700_000_000, -5, 8 ** 11 - 1, 8 ** 11]
PAX = [None, {}, {"SCHILY.xattr.user.k": "v"}, {"SCHILY.xattr.user.bin": "\udcff\x00x"}]


def _reference(name, type_, mode, uid, gid, mtime, size=0, linkname="", devmajor=0, devminor=0, pax=None):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.size = type_, mode, uid, gid, mtime, size
    ti.linkname, ti.devmajor, ti.devminor, ti.uname, ti.gname = linkname, devmajor, devminor, "", ""
    ti.pax_headers = dict(pax or {})
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def test_every_header_is_tarfiles():
    cases = 0
    for type_ in TYPES:
        for name in NAMES:
            for link in LINKS if type_ in (tarfile.LNKTYPE, tarfile.SYMTYPE) else [""]:
                for mode in (0o644, 0o4755, 0o1777, 0o100644):
                    for pax in PAX:
                        args = (name, type_, mode, 1000, 1000, 1_700_000_000)
                        kw = dict(linkname=link, pax=pax)
                        assert tar_header(*args, **kw) == _reference(*args, **kw), (args, kw)
                        cases += 1
    for uid in IDS:
        for gid in IDS:
            for size in SIZES:
                for mtime in MTIMES:
                    args = ("f", tarfile.REGTYPE, 0o600, uid, gid, mtime)
                    assert tar_header(*args, size=size) == _reference(*args, size=size), (args, size)
                    cases += 1
    for type_ in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        for major, minor in ((1, 3), (0, 0), (8 ** 7 - 1, 5), (259, 8 ** 7 - 1)):
            args = ("dev/x", type_, 0o600, 0, 0, 0)
            kw = dict(devmajor=major, devminor=minor)
            assert tar_header(*args, **kw) == _reference(*args, **kw)
            cases += 1
    assert cases > 1000


def _tree(root: Path) -> None:
    """Every entry kind and field a layer diff meets; ids and device nodes when root may make them."""
    (root / "d" / ("x" * 120) / "y").mkdir(parents=True)
    (root / "d" / ("x" * 120) / "y" / ("f" * 99)).write_text("deep")
    (root / "héllo").write_text("accent")
    (root / os.fsdecode(b"bad\xff\xfename")).write_bytes(b"undecodable")
    os.symlink("t" * 150, root / "longlink")
    os.symlink("target", root / "shortlink")
    (root / "hl1").write_text("linked" * 100)
    os.link(root / "hl1", root / "hl2")
    os.mkfifo(root / "fifo")
    (root / "xa").write_text("x")
    os.setxattr(root / "xa", "user.note", b"value")
    (root / "xdir").mkdir()
    os.setxattr(root / "xdir", "user.d", b"\xff\x00bin")
    for n in (0, 1, 511, 512, 513, SMALL_BODY - 1, SMALL_BODY, SMALL_BODY + 1, (1 << 20) + 5, 3 << 20):
        (root / f"size{n}").write_bytes(os.urandom(n))
    for name, t in (("negtime", -100), ("fartime", 9 ** 12), ("fraction", 1234.75)):
        (root / name).write_text(name)
        os.utime(root / name, (t, t))
    os.chmod(root / "size1", 0o4755)
    (root / "e").mkdir()
    os.chmod(root / "e", 0o1777)
    (root / ("n" * 101)).write_text("101")
    if os.geteuid() == 0:
        os.mknod(root / "chr", 0o20644, os.makedev(1, 3))
        os.mknod(root / "blk", 0o60600, os.makedev(8, 1))
        (root / "biguid").write_text("u")
        os.lchown(root / "biguid", 3_000_000, 5)


def _changes(root: Path) -> list[Change]:
    out = [Change("/gone/file", "whiteout"), Change("/e", "opaque")]
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = "/" + os.path.relpath(os.path.join(d, n), root)
            if p != "/e":
                out.append(Change(p, "content"))
    return out


def _tarfile_stream(root: Path, changes: list[Change], epoch) -> bytes:
    """The layer tar as bale wrote it with tarfile before (snapshotter/diff.py up to issue 10)."""
    entries = {}
    for c in changes:
        entries[c.path] = c
        parts = c.path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            entries.setdefault("/" + "/".join(parts[:i]), Change("/" + "/".join(parts[:i]), "content"))
    clamp = (lambda m: min(int(m), epoch)) if epoch is not None else int
    links: dict = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=tarfile.PAX_FORMAT) as tw:
        for path in sorted(entries, key=lambda p: p.split("/")):
            c, name = entries[path], path.lstrip("/")
            host = os.path.join(root, name)
            if c.kind == "whiteout":
                parent, base = os.path.split(name)
                ti = tarfile.TarInfo(os.path.join(parent, ".wh." + base))
                ti.mtime, ti.mode = clamp(0), 0o644
                tw.addfile(ti)
                continue
            try:
                st = os.lstat(host)
            except FileNotFoundError:  # an ancestor a whiteout implies
                continue
            ti = tarfile.TarInfo(name)
            ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, "", ""
            ti.mtime = clamp(st.st_mtime)
            m = st.st_mode
            if stat.S_ISREG(m):
                ti.type, ti.size = tarfile.REGTYPE, st.st_size
            elif stat.S_ISDIR(m):
                ti.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(m):
                ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(host)
            elif stat.S_ISFIFO(m):
                ti.type = tarfile.FIFOTYPE
            else:
                ti.type = tarfile.CHRTYPE if stat.S_ISCHR(m) else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            ti.pax_headers = {"SCHILY.xattr." + k: os.getxattr(host, k, follow_symlinks=False).decode(
                "utf-8", "surrogateescape") for k in sorted(os.listxattr(host, follow_symlinks=False))}
            if ti.isreg() and st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in links:
                    ti.type, ti.linkname, ti.size = tarfile.LNKTYPE, links[(st.st_dev, st.st_ino)], 0
                    tw.addfile(ti)
                    continue
                links[(st.st_dev, st.st_ino)] = name
            if ti.isreg():
                with open(host, "rb") as fh:
                    tw.addfile(ti, fh)
            else:
                tw.addfile(ti)
            if c.kind == "opaque":
                marker = tarfile.TarInfo(f"{name}/.wh..wh..opq")
                marker.mtime, marker.mode = clamp(0), 0o644
                tw.addfile(marker)
    return buf.getvalue()


def _through_pipe(root: Path, changes: list[Change], epoch) -> bytes:
    r, w = os.pipe()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(os.fdopen(r, "rb").read()))
    reader.start()
    with os.fdopen(w, "wb") as out:
        write_tar(root, changes, out, source_date_epoch=epoch)
    reader.join()
    return got[0]


@pytest.mark.parametrize("epoch", [None, 1000])
def test_layer_stream_is_tarfiles_into_every_kind_of_output(tmp_path, epoch):
    root = tmp_path / "upper"
    root.mkdir()
    _tree(root)
    changes = _changes(root)
    expected = _tarfile_stream(root, changes, epoch)
    buf = io.BytesIO()
    write_tar(root, changes, buf, source_date_epoch=epoch)
    assert buf.getvalue() == expected
    with open(tmp_path / "out.tar", "w+b") as fh:
        fh.write(b"lead")  # what the file object held before: flushed first, kept in front
        write_tar(root, changes, fh, source_date_epoch=epoch)
        assert fh.tell() == 4 + len(expected)
        fh.seek(0)
        assert fh.read() == b"lead" + expected
    assert _through_pipe(root, changes, epoch) == expected
    with tarfile.open(fileobj=io.BytesIO(expected)) as t:  # and tarfile reads the bodies back
        assert t.extractfile(f"size{3 << 20}").read() == (root / f"size{3 << 20}").read_bytes()


@pytest.mark.parametrize("size", [100, SMALL_BODY + 100, 3 << 20])
def test_a_grown_file_is_cut_and_a_shrunk_one_is_an_error_naming_it(tmp_path, size):
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        out = open(tmp_path / "out", "wb")
        tw = TarStream(out)
        tw.add_file(tar_header("f", tarfile.REGTYPE, 0o644, 0, 0, 0, size=size - 10), fd, size - 10, "/f")
        tw.close()
        out.close()
        with tarfile.open(tmp_path / "out") as t:
            assert t.extractfile("f").read() == data[:size - 10]
        tw = TarStream(io.BytesIO())
        with pytest.raises(SnapshotError, match=rf"^/f: file shrank while its layer was written \(read {size} of "
                                                rf"{size + 1} bytes\)$"):
            tw.add_file(tar_header("f", tarfile.REGTYPE, 0o644, 0, 0, 0, size=size + 1), fd, size + 1, "/f")
    finally:
        os.close(fd)
