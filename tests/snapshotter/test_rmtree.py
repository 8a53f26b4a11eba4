"""rm -rf at any depth: a tree deeper than Python's recursion limit and longer than PATH_MAX
(what a hostile context or RUN can leave in a snapshot) is removed, by prune and by the
snapshot drivers, without following symlinks and within a small open-file limit."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from snapshotter.rmtree import remove_tree

CHILD = r"""
import os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from snapshotter.rmtree import remove_tree
print(remove_tree(sys.argv[1]))
"""


def _deep(base: Path, depth: int, outside: Path) -> None:
    base.mkdir()
    fd = os.open(base, os.O_RDONLY)
    cur = fd
    for i in range(depth):
        os.mkdir("level-%04d" % i, dir_fd=cur)
        if i % 100 == 0:
            with open(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=cur), "wb") as fh:
                fh.write(b"x" * 5000)
            os.symlink(str(outside), "out", dir_fd=cur)
        nxt = os.open("level-%04d" % i, os.O_RDONLY, dir_fd=cur)
        if i == depth // 2:
            os.fchmod(cur, 0o500)  # a level its owner cannot write
        if cur != fd:
            os.close(cur)
        cur = nxt
    os.close(cur)
    os.close(fd)


def test_deeper_than_recursion_and_path_max(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    tree = tmp_path / "tree"
    _deep(tree, 1500, outside)  # 1500 levels of 11 bytes: past PATH_MAX and the recursion limit
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, str(tree)], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    finally:
        if tree.exists():  # pytest's own clean-up of tmp_path could not remove it
            remove_tree(tree)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == 15 * 5000 + sum(len(str(outside)) for _ in range(15))  # files and link targets
    assert not tree.exists()
    assert (outside / "keep").read_text() == "keep"  # symlinks removed, never followed


def test_files_symlinks_and_missing(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    link = tmp_path / "l"
    link.symlink_to(tmp_path / "gone")
    assert remove_tree(f) == 1 and not f.exists()
    assert remove_tree(link) == len(str(tmp_path / "gone")) and not os.path.lexists(link)
    assert remove_tree(tmp_path / "never-was") == 0
