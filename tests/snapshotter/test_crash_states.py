"""What a killed writer leaves behind never wedges the next one: layers are built aside and
published by one rename, removals go through a ``.del-`` rename, and ``sweep`` removes only the
work directories whose writer is dead (its flock released), never a live one's. The native driver
tells a replaced directory from a modified one by file handle, not by a recyclable inode number."""
import io
import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from builder.sandbox.userns import call_in_child
from snapshotter import drivers
from snapshotter.api import get_driver
from testdata.hostile.archives import _tar

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlay in these tests needs root")

BASE = _tar([("d", "dir", ""), ("d/a", "file", "a"), ("f", "file", "f")])
LID = "ab" * 32


def _open(data):
    return lambda: io.BytesIO(data)


def test_commit_after_a_crash_between_mkdir_and_rename(tmp_path):
    """Older bale made layers/<id> first and renamed the upper into it second; a crash between the
    two left layers/<id> without diff, and every later commit of that layer skipped it and failed
    to mount ("overlay mount failed"). Now such a directory is replaced and the mount works."""
    def flow(root):
        d = get_driver("overlay", Path(root))
        d.ensure_layer("base", _open(BASE))
        (Path(root) / "overlay" / "layers" / LID).mkdir()  # the crashed commit's leftover
        d.prepare("c", ["base"])
        m = d.mount("c")
        (m / "step").write_text("1")
        d.commit("c", LID)
        m = d.mount("c")
        return sorted(os.listdir(m)), (Path(root) / "overlay" / "layers" / LID / "diff" / "step").read_text()
    files, content = call_in_child(flow, str(tmp_path / "s"))
    assert files == ["d", "f", "step"] and content == "1"


def test_ensure_layer_replaces_a_layer_dir_without_diff(tmp_path):
    def flow(root):
        d = get_driver("overlay", Path(root))
        (Path(root) / "overlay" / "layers" / "base").mkdir(parents=True)
        d.ensure_layer("base", _open(BASE))
        return sorted(os.listdir(d.layer_dir("base")))
    assert call_in_child(flow, str(tmp_path / "s")) == ["d", "f"]


def test_ensure_layer_killed_mid_unpack_leaves_no_layer(tmp_path):
    """A reader that dies mid-tar (as a kill would) leaves no layers/<id>: has_layer stays False."""
    def flow(root):
        d = get_driver("overlay", Path(root))

        def broken():
            raise KeyboardInterrupt  # stands for the kill: the unpack never finishes
        with pytest.raises(KeyboardInterrupt):
            d.ensure_layer("base", broken)
        return d.has_layer("base"), d.layers(), sorted(os.listdir(Path(root) / "overlay" / "layers"))
    has, layers, names = call_in_child(flow, str(tmp_path / "s"))
    assert not has and layers == [] and names == []


def test_sweep_removes_dead_writers_work_dirs_only(tmp_path):
    root = tmp_path / "s"
    d = get_driver("native", root)
    layers = root / "native" / "layers"
    dead = layers / ".tmp-dead-1"
    (dead / "diff").mkdir(parents=True)
    half_removed = root / "native" / "containers" / ".del-abc-1234"
    (half_removed / "rootfs").mkdir(parents=True)
    live, fd = drivers._locked_tempdir(layers, "live")
    fresh = layers / ".new-fresh-1"
    fresh.mkdir()
    old = layers / ".new-old-1"
    old.mkdir()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    keep = layers / "somelayer"
    (keep / "diff").mkdir(parents=True)
    try:
        assert d.sweep() == 3
        assert sorted(os.listdir(layers)) == sorted([live.name, fresh.name, "somelayer"])
        assert os.listdir(root / "native" / "containers") == []
    finally:
        os.close(fd)
    assert d.sweep() == 1 and sorted(os.listdir(layers)) == sorted([fresh.name, "somelayer"])


def test_remove_goes_through_one_rename(tmp_path, monkeypatch):
    """A removal that dies half-way leaves a ``.del-`` tree (swept later), never a partial layer."""
    root = tmp_path / "s"
    d = get_driver("native", root)
    layer = root / "native" / "layers" / "l1"
    (layer / "diff" / "x").mkdir(parents=True)

    def die(path):
        assert path.name.startswith(".del-") and not layer.exists()
        raise KeyboardInterrupt
    monkeypatch.setattr(drivers, "remove_tree", die)
    with pytest.raises(KeyboardInterrupt):
        d.remove_layer("l1")
    monkeypatch.undo()
    assert d.layers() == [] and d.sweep() == 1 and os.listdir(root / "native" / "layers") == []


def test_native_replaced_dir_is_opaque_even_with_a_recycled_inode(tmp_path):
    """rm -rf d && mkdir d: ext4 usually hands the old inode number back, so only the file handle
    (which carries the generation) shows the directory was replaced; overlay marks it opaque."""
    results = []
    for i in range(20):
        d = get_driver("native", tmp_path / f"s{i}")
        d.prepare("c", ["base"], [_open(BASE)])
        rootfs = d.mount("c")
        ino = os.lstat(rootfs / "d").st_ino
        shutil.rmtree(rootfs / "d")
        (rootfs / "d").mkdir()
        (rootfs / "d" / "b").write_text("b")
        buf = io.BytesIO()
        d.diff("c", buf)
        with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as t:
            names = sorted(t.getnames())
        results.append((ino == os.lstat(rootfs / "d").st_ino, names))
    assert all(names == ["d", "d/.wh..wh..opq", "d/b"] for _, names in results), results
    print("inode recycled in", sum(r for r, _ in results), "of 20")


def test_native_modified_dir_is_not_opaque(tmp_path):
    d = get_driver("native", tmp_path / "s")
    d.prepare("c", ["base"], [_open(BASE)])
    rootfs = d.mount("c")
    os.unlink(rootfs / "d" / "a")
    (rootfs / "d" / "b").write_text("b")
    buf = io.BytesIO()
    d.diff("c", buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as t:
        assert sorted(t.getnames()) == ["d", "d/.wh.a", "d/b"]


def test_ensure_layer_that_loses_the_race_keeps_the_winners(tmp_path):
    """Another process publishes the same layer while this one unpacks it: this one's copy goes
    (it holds that copy's flock already: removing it must not wait for a second one)."""
    def flow(root):
        d = get_driver("overlay", Path(root))
        final = Path(root) / "overlay" / "layers" / "base"

        def opener():
            (final / "diff").mkdir(parents=True)
            (final / "diff" / "winner").write_text("w")
            return io.BytesIO(BASE)
        path = d.ensure_layer("base", opener)
        return sorted(os.listdir(path)), sorted(os.listdir(final.parent))
    files, names = call_in_child(flow, str(tmp_path / "s"))
    assert files == ["winner"] and names == ["base"]
