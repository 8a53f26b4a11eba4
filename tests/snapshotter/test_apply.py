"""Layer apply: both whiteout formats, and hostile archives never escape."""
import io
import os
import stat
import tarfile

import pytest

from snapshotter.apply import apply_tar
from testdata.hostile.archives import ESCAPES, _tar, snapshot_tree


@pytest.fixture
def outside(tmp_path):
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_text("precious")
    (d / "sub").mkdir()
    return d


@pytest.mark.parametrize("fmt", ["native", "overlay"])
@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_hostile_archive_stays_inside(tmp_path, outside, name, fmt):
    target = tmp_path / "target"
    target.mkdir()
    before = snapshot_tree(str(outside))
    siblings = set(os.listdir(tmp_path))
    try:
        apply_tar(io.BytesIO(ESCAPES[name](str(outside))), target, whiteout_format=fmt)
    except Exception as exc:  # refusing is fine; escaping is not
        assert "hard link" in str(exc) or isinstance(exc, (OSError,)), exc
    assert snapshot_tree(str(outside)) == before
    assert set(os.listdir(tmp_path)) == siblings


def test_native_whiteouts_and_opaque(tmp_path):
    target = tmp_path / "t"
    apply_tar(io.BytesIO(_tar([("a", "dir", ""), ("a/old", "file", "1"), ("keep", "file", "k"),
                               ("gone", "file", "g"), ("d", "dir", ""), ("d/x", "file", "x")])), target)
    apply_tar(io.BytesIO(_tar([(".wh.gone", "file", ""), ("a/.wh..wh..opq", "file", ""), ("a/new", "file", "2"),
                               (".wh.d", "file", "")])), target)
    assert sorted(os.listdir(target)) == ["a", "keep"]
    assert os.listdir(target / "a") == ["new"]


def test_opaque_keeps_entries_of_the_same_layer(tmp_path):
    target = tmp_path / "t"
    apply_tar(io.BytesIO(_tar([("a", "dir", ""), ("a/old", "file", "1")])), target)
    apply_tar(io.BytesIO(_tar([("a", "dir", ""), ("a/b", "file", "2"), ("a/.wh..wh..opq", "file", "")])), target)
    assert os.listdir(target / "a") == ["b"]


def test_overlay_format_records_whiteouts(tmp_path):
    target = tmp_path / "t"
    apply_tar(io.BytesIO(_tar([(".wh.gone", "file", ""), ("a/.wh..wh..opq", "file", "")])), target,
              whiteout_format="overlay")
    st = os.lstat(target / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(target / "a", "user.overlay.opaque") == b"y"


def test_metadata_owners_modes_links_xattrs(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        ti = tarfile.TarInfo("bin/tool")
        ti.size, ti.mode, ti.uid, ti.gid, ti.mtime = 2, 0o4755, 1234, 4321, 1000000
        ti.pax_headers = {"SCHILY.xattr.user.note": "hello"}
        t.addfile(ti, io.BytesIO(b"#!"))
        hl = tarfile.TarInfo("bin/tool2")
        hl.type, hl.linkname = tarfile.LNKTYPE, "bin/tool"
        t.addfile(hl)
        f = tarfile.TarInfo("pipe")
        f.type = tarfile.FIFOTYPE
        t.addfile(f)
    target = tmp_path / "t"
    apply_tar(io.BytesIO(buf.getvalue()), target)
    st = os.lstat(target / "bin/tool")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime) == (1234, 4321, 0o4755, 1000000)
    assert os.lstat(target / "bin/tool2").st_ino == st.st_ino
    assert os.getxattr(target / "bin/tool", "user.note") == b"hello"
    assert stat.S_ISFIFO(os.lstat(target / "pipe").st_mode)


@pytest.mark.parametrize("fmt", ["native", "overlay"])
def test_cached_parent_replaced_by_a_symlink_stays_inside(tmp_path, outside, fmt):
    """apply_tar resolves each parent once: a directory already written into, then replaced by a
    symlink (to the host, absolute and by ``..``), then written through again, must resolve the
    new symlink inside the root, as a fresh resolution does (issue 10 cache invalidation)."""
    target = tmp_path / "t"
    before = snapshot_tree(str(outside))
    up = "../" * 12 + str(outside).lstrip("/")
    apply_tar(io.BytesIO(_tar([("a", "dir", ""), ("a/b", "dir", ""), ("a/b/f", "file", "1"),
                               ("a", "symlink", str(outside)), ("a/b/g", "file", "2"),
                               ("c", "dir", ""), ("c/d", "dir", ""), ("c/d/f", "file", "3"),
                               (".wh.c", "file", ""), ("c", "symlink", up), ("c/d/h", "file", "4")])),
              target, whiteout_format=fmt)
    assert snapshot_tree(str(outside)) == before
    assert os.readlink(target / "a") == str(outside)
    assert (target / str(outside).lstrip("/") / "b" / "g").read_text() == "2"
    assert (target / str(outside).lstrip("/") / "d" / "h").read_text() == "4"


def test_cached_parent_replaced_by_a_file_is_made_again(tmp_path):
    target = tmp_path / "t"
    apply_tar(io.BytesIO(_tar([("a", "dir", ""), ("a/f", "file", "1"), ("a", "file", "x"),
                               ("a/g", "file", "2"), ("big", "file", "y" * 3_000_000)])), target)
    assert sorted(os.listdir(target / "a")) == ["g"]
    assert (target / "big").stat().st_size == 3_000_000


def test_truncated_body_is_an_error(tmp_path):
    data = _tar([("f", "file", "z" * 100_000)])
    from snapshotter.errors import SnapshotError
    with pytest.raises(SnapshotError):
        apply_tar(io.BytesIO(data[:60_000]), tmp_path / "t")
