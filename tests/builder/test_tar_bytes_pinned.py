"""Both tar writers of bale give the bytes they gave before they shared one header builder and one
body loop (snapshotter/tarwriter.py): the COPY tar (builder/build/copier.write_tar through
builder/build/tarstream.TarWriter: a context directory with owners kept, as COPY --from, and an
ADD archive passed through) and the layer diff (snapshotter/diff.write_tar), over one tree of
every kind of entry: regular files small and kernel-sent, names and link targets over 100 bytes,
a non-ASCII name, hard links, symlinks, a fifo, user xattrs, uid/gid over ustar's 2097151 and
mtimes with nanoseconds. The digests were taken from main's writers at f26be61 (Python 3.11's
tarfile); every stream is also read back with tarfile field by field, and the same bytes come
out into a BytesIO, a regular file and a pipe. A file over 8 GiB is checked by its header only
(its body would cost a 8 GiB read): both header builders give tarfile's, a PAX "size" record."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
from pathlib import Path
from typing import Callable

from builder.build import copier
from builder.build.tarstream import TarWriter
from snapshotter.diff import Change, write_tar as layer_tar
from snapshotter.tarwriter import tar_header

BIG_UID, BIG_GID = 3_000_000, 2_500_000  # over 8 ** 7 - 1: PAX uid/gid records
MTIME_NS = 1_700_000_000_123_456_789
LONG = "n" * 120
DEEP = f"d/{'x' * 120}/y/{'f' * 99}"
BODY = bytes(range(256)) * 800  # 204800 bytes: over SMALL_BODY, sent by the kernel into an fd
#: sha256 of each stream as main's writers wrote it (f26be61)
PINNED = {
    "copy": "61a86bd564a1e9ece1968188b60b6e5b20623a5eae8f7d796c362dd24369675e",
    "add": "6010cd862a226e74095b66257b8937c4c50efce1558a07ee24fa18bf747979b5",
    "layer": "ad6b8d61953fc80a7045a521b568fcaa400ac7c67d0497cfad5158de09e2fc6a",
    "big-header": "288bebc03ced15d31351c30a7950a88e1add22267d5d430d4d539c296cf64471",
}


def _tree(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Make the tree under ``root``; every entry's relative name -> (mode, uid, gid, mtime ns) set."""
    (root / "d" / ("x" * 120) / "y").mkdir(parents=True)
    (root / DEEP).write_bytes(b"deep\n")
    (root / "reg").write_bytes(b"regular\n" * 10)
    (root / "body").write_bytes(BODY)
    (root / LONG).write_bytes(b"long name\n")
    (root / "héllo").write_bytes(b"accent\n")
    os.symlink("t" * 150, root / "longlink")
    os.symlink("reg", root / "shortlink")
    (root / "hl1").write_bytes(b"linked\n" * 100)
    os.link(root / "hl1", root / "hl2")
    os.mkfifo(root / "fifo")
    (root / "xa").write_bytes(b"x\n")
    os.setxattr(root / "xa", "user.note", b"value")
    (root / "xdir").mkdir()
    os.setxattr(root / "xdir", "user.d", b"\xff\x00bin")
    (root / "bigids").write_bytes(b"ids\n")
    os.symlink("bigids", root / "bigidslink")
    want: dict[str, tuple[int, int, int, int]] = {}
    paths = sorted(root.rglob("*"), key=lambda p: (-len(p.parts), str(p)))  # deepest first: dir times last
    for i, p in enumerate(paths):
        rel = str(p.relative_to(root))
        uid, gid = (BIG_UID, BIG_GID) if rel.startswith("bigids") else (1000 + i, 2000 + i)
        os.lchown(p, uid, gid)
        mode = 0o777 if p.is_symlink() else 0o755 if p.is_dir() else 0o4751 if rel == "reg" else 0o640
        if not p.is_symlink():
            os.chmod(p, mode)
        mtime = MTIME_NS + i * 1_000_000_007
        os.utime(p, ns=(mtime, mtime), follow_symlinks=False)
    for p in paths:  # as set last (the two names of the hard link share theirs)
        st = os.lstat(p)
        want[str(p.relative_to(root))] = (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime_ns)
    return want


def _outputs(write: Callable[[io.BufferedIOBase], None], tmp: Path) -> bytes:
    """What ``write`` gives into a BytesIO, asserted the same into a regular file and a pipe."""
    buf = io.BytesIO()
    write(buf)
    data = buf.getvalue()
    with open(tmp / "out.tar", "w+b") as fh:
        write(fh)
        fh.flush()
        fh.seek(0)
        assert fh.read() == data
    r, w = os.pipe()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(os.fdopen(r, "rb").read()))
    reader.start()
    with os.fdopen(w, "wb") as out:
        write(out)
    reader.join()
    assert got[0] == data
    return data


def _members(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return {m.name.rstrip("/"): (m, t.extractfile(m).read() if m.isreg() else b"") for m in t.getmembers()}


def _check_fields(members: dict[str, tuple[tarfile.TarInfo, bytes]], root: Path,
                  want: dict[str, tuple[int, int, int, int]], prefix: str, exact_ns: bool) -> None:
    """Every field tarfile reads back is the tree's: type, mode, ids, mtime (with its nanoseconds
    where the writer keeps them), size and content, link targets, xattrs."""
    hard = 0
    for rel, (mode, uid, gid, mtime_ns) in want.items():
        m, content = members[prefix + rel]
        host = root / rel
        assert (m.mode, m.uid, m.gid, m.uname, m.gname) == (mode, uid, gid, "", ""), rel
        if exact_ns:
            assert m.pax_headers["mtime"] == str(os.lstat(host).st_mtime), rel  # tarfile: the float's repr
        assert int(m.mtime) == mtime_ns // 10 ** 9, rel
        if host.is_symlink():
            assert m.issym() and m.linkname == os.readlink(host), rel
        elif host.is_dir():
            assert m.isdir(), rel
        elif rel == "fifo":
            assert m.isfifo(), rel
        elif m.islnk():
            hard += 1
            assert m.linkname == prefix + "hl1" and rel == "hl2"
        else:
            assert m.isreg() and content == host.read_bytes() and m.size == len(content), rel
        xattrs = {k: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
        assert xattrs == {"SCHILY.xattr." + k: os.getxattr(host, k, follow_symlinks=False).decode(
            "utf-8", "surrogateescape") for k in os.listxattr(host, follow_symlinks=False)}, rel
    assert hard == 1


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_copy_tar_bytes_are_pinned(tmp_path):
    root = tmp_path / "ctx"
    root.mkdir()
    want = _tree(root)
    srcs = copier.resolve_sources(root, ["."])
    for s in srcs:
        s.keep_owner = True  # COPY --from: the owners as they are
    plan = copier.plan_copy(srcs, "/opt", None)
    data = _outputs(lambda out: copier.write_tar(plan, out), tmp_path)
    _check_fields(_members(data), root, want, "", exact_ns=True)
    assert _digest(data) == PINNED["copy"]


def test_add_archive_bytes_are_pinned(tmp_path):
    """ADD passes an archive's members through (names under the destination, owners' names kept)."""
    root = tmp_path / "ctx"
    root.mkdir()
    archive = root / "a.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as t:
        for i, (name, data) in enumerate([("plain", b"p\n" * 3), (LONG, BODY), ("owned", b"o\n")]):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode, ti.uid, ti.gid = len(data), 1_600_000_000 + i, 0o600, 5 + i, 6 + i
            ti.uname, ti.gname = ("someone", "group") if name == "owned" else ("", "")
            t.addfile(ti, io.BytesIO(data))
        for ti in (tarfile.TarInfo("dir"), tarfile.TarInfo("ln"), tarfile.TarInfo("sym")):
            ti.type = {"dir": tarfile.DIRTYPE, "ln": tarfile.LNKTYPE, "sym": tarfile.SYMTYPE}[ti.name]
            ti.linkname = {"dir": "", "ln": "plain", "sym": "l" * 130}[ti.name]
            ti.mtime, ti.uid, ti.gid = 1_600_000_100, BIG_UID, BIG_GID
            t.addfile(ti)
    plan = copier.plan_copy(copier.resolve_sources(root, ["a.tar"], add=True), "/opt/", "dir")
    data = _outputs(lambda out: copier.write_tar(plan, out), tmp_path)
    members = _members(data)
    assert members[LONG][1] == BODY and members["owned"][0].uname == "someone"
    assert members["ln"][0].linkname == "plain" and members["sym"][0].linkname == "l" * 130
    assert (members["dir"][0].uid, members["dir"][0].gid) == (BIG_UID, BIG_GID)
    assert _digest(data) == PINNED["add"]


def test_layer_tar_bytes_are_pinned(tmp_path):
    root = tmp_path / "upper"
    root.mkdir()
    want = _tree(root)
    changes = [Change("/" + rel, "content") for rel in want] + [Change("/gone", "whiteout")]
    data = _outputs(lambda out: layer_tar(root, changes, out), tmp_path)
    _check_fields(_members(data), root, want, "", exact_ns=False)
    assert ".wh.gone" in _members(data)
    assert _digest(data) == PINNED["layer"]


def test_headers_of_a_file_over_8_gib_are_tarfiles_and_pinned():
    size = 9 << 30
    ti = tarfile.TarInfo("huge")
    ti.size, ti.mtime, ti.mode, ti.uid, ti.gid = size, 1_700_000_000, 0o644, 0, 0
    ti.uname = ti.gname = ""
    reference = ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    buf = io.BytesIO()
    tw = TarWriter(buf)
    tw.header(ti)
    tw.close()
    layer = tar_header("huge", tarfile.REGTYPE, 0o644, 0, 0, 1_700_000_000, size=size)
    assert buf.getvalue() == reference + bytes(tarfile.RECORDSIZE - len(reference)) and layer == reference
    assert tarfile.TarInfo.frombuf(reference[-512:], "utf-8", "surrogateescape").size == 0
    with tarfile.open(fileobj=io.BytesIO(reference + bytes(1024)), mode="r:") as t:
        assert t.next().size == size  # the PAX "size" record
    assert _digest(reference) == PINNED["big-header"]
