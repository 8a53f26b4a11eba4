"""The suite every driver passes (containerd's SnapshotterSuite is the model), and
native and overlay diffs held byte-identical for the same step. As root here the
overlay is mounted in a private mount namespace of a forked child; the rootless
path (userxattr in a user namespace) is exercised by tests/cli/test_scripted.py."""
import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from builder.sandbox.userns import call_in_child
from snapshotter.api import get_driver
from testdata.hostile.archives import _tar

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlay in these tests needs root")

EPOCH = 1700000000
BASE = _tar([("etc", "dir", ""), ("etc/passwd", "file", "root:x:0:0::/root:/bin/sh\n"), ("keep", "dir", ""),
             ("keep/k", "file", "k"), ("gone", "file", "g"), ("tree", "dir", ""), ("tree/a", "file", "a"),
             ("tree/sub", "dir", ""), ("tree/sub/b", "file", "b"), ("mod", "file", "old"),
             ("link", "symlink", "mod")])


def _open(data):
    return lambda: io.BytesIO(data)


def _step(root: str) -> None:
    """The same filesystem changes, made through the merged view or the plain rootfs."""
    r = Path(root)
    (r / "gone").unlink()
    shutil.rmtree(r / "tree")
    (r / "tree").mkdir()
    (r / "tree" / "fresh").write_text("fresh")
    (r / "mod").write_text("new content")
    os.chmod(r / "mod", 0o4755)
    (r / "new").mkdir()
    (r / "new" / "file").write_text("n")
    os.link(r / "new" / "file", r / "new" / "hard")
    os.symlink("../etc/passwd", r / "new" / "sym")
    os.mkfifo(r / "new" / "fifo")
    os.setxattr(r / "new" / "file", "user.test", b"v")
    os.chown(r / "new" / "file", 1234, 4321)
    for p in [r / "new", r / "tree", r / "tree" / "fresh", r / "mod", r, r / "new" / "file", r / "new" / "hard"]:
        os.utime(p, (EPOCH, EPOCH), follow_symlinks=False)


def _run(root: str, name: str, key: str, ignore=()) -> bytes:
    d = get_driver(name, Path(root))
    d.ensure_layer("base", _open(BASE))
    d.prepare(key, ["base"], [_open(BASE)])
    merged = d.mount(key)
    _step(str(merged))
    buf = io.BytesIO()
    d.diff(key, buf, ignore_if_empty=ignore, source_date_epoch=EPOCH)
    d.unmount(key)
    return buf.getvalue().hex()  # the namespace wire carries plain data only


def _names(data: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return {m.name: m for m in t.getmembers()}


def test_native_and_overlay_give_identical_tars(tmp_path):
    overlay = bytes.fromhex(call_in_child(_run, str(tmp_path / "s"), "overlay", "c1"))
    native = bytes.fromhex(call_in_child(_run, str(tmp_path / "s"), "native", "c1"))
    members = _names(overlay)
    assert ".wh.gone" in members and "tree/.wh..wh..opq" in members and "tree/fresh" in members
    assert members["new/hard"].islnk() and members["new/hard"].linkname == "new/file"
    assert members["new/file"].uid == 1234 and members["new/file"].pax_headers["SCHILY.xattr.user.test"] == "v"
    assert members["mod"].mode == 0o4755 and members["new/fifo"].isfifo()
    assert not any(n.startswith("keep") or n.startswith("etc") for n in members)
    assert not any("overlay" in k for m in members.values() for k in m.pax_headers)
    assert overlay == native


def test_sandbox_mountpoints_are_dropped(tmp_path):
    def step(root):
        d = get_driver("overlay", Path(root))
        d.ensure_layer("base", _open(BASE))
        d.prepare("c", ["base"])
        m = d.mount("c")
        (m / "proc").mkdir()
        (m / "etc" / "hosts").touch()
        (m / "run").mkdir()
        (m / "run" / "x").write_text("real")
        buf = io.BytesIO()
        d.diff("c", buf, ignore_if_empty=["/proc", "/etc/hosts", "/run"])
        return buf.getvalue().hex()
    names = set(_names(bytes.fromhex(call_in_child(step, str(tmp_path / "s")))))
    assert names == {"run", "run/x"}


def test_deep_stack_beyond_one_page_of_options(tmp_path):
    def stack(root):
        d = get_driver("overlay", Path(root))
        ids = []
        for i in range(120):
            lid = f"{i:064x}"  # 64-hex ids make each lowerdir path long
            d.ensure_layer(lid, _open(_tar([(f"f{i}", "file", str(i))])))
            ids.append(lid)
        d.prepare("deep", ids)
        m = d.mount("deep")
        return sorted(os.listdir(m))
    got = call_in_child(stack, str(tmp_path / "s"))
    assert len(got) == 120 and "f0" in got and "f119" in got


def test_ensure_layer_idempotent_and_commit(tmp_path):
    def flow(root):
        d = get_driver("overlay", Path(root))
        d.ensure_layer("base", _open(BASE))
        d.ensure_layer("base", lambda: (_ for _ in ()).throw(AssertionError("unpacked twice")))
        d.prepare("c", ["base"])
        m = d.mount("c")
        (m / "step1").write_text("1")
        d.commit("c", "l1")
        m = d.mount("c")
        (m / "step2").write_text("2")
        buf = io.BytesIO()
        d.diff("c", buf)
        files = sorted(os.listdir(m))
        d.remove("c")
        return buf.getvalue().hex(), files, (Path(root) / "overlay" / "containers" / "c").exists()
    data, files, exists = call_in_child(flow, str(tmp_path / "s"))
    assert set(_names(bytes.fromhex(data))) == {"step2"} and "step1" in files and not exists


@pytest.mark.skipif(not shutil.which("fuse-overlayfs") or not os.path.exists("/dev/fuse"),
                    reason="fuse-overlayfs or /dev/fuse missing: the fallback driver cannot mount here")
def test_fuse_overlayfs_gives_the_same_tar(tmp_path):
    fuse = bytes.fromhex(call_in_child(_run, str(tmp_path / "s"), "fuse-overlayfs", "c1"))
    native = bytes.fromhex(call_in_child(_run, str(tmp_path / "s"), "native", "c1"))
    assert fuse == native
