"""A build context deeper than Python's recursion limit (issue 12 item 10: no internal error for
any input). COPY's walk, its cache digest (--layers) and the tree removal were recursive: 1,100
levels gave "internal error: RecursionError" and left a store that no prune could clean."""
from __future__ import annotations

import os

import pytest

from snapshotter.rmtree import remove_tree
from tests.helpers.oci_reader import flatten, read_layout

pytestmark = [pytest.mark.slow]
DEPTH = 1100


def test_copy_of_a_context_deeper_than_the_recursion_limit(bale, store_with_busybox, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY deep /deep\n")
    d = ctx / "deep"
    d.mkdir()
    fd = os.open(d, os.O_RDONLY)
    for _ in range(DEPTH):
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    with open(os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd), "w") as fh:
        fh.write("bottom\n")
    os.close(fd)
    # entries the walk meets after coming back up from the deep branch: the copy keeps only the
    # deepest 128 levels open (a hard RLIMIT_NOFILE of 1,024, as fresh-check's container has) and
    # reopens shallower ones by name
    (d / "d" / "d" / "z.txt").write_text("level two\n")
    (d / "a.txt").write_text("level one\n")
    (d / "e").mkdir()
    (d / "e" / "f").write_text("sibling\n")
    try:
        _build_and_prune(bale, store_with_busybox, ctx, tmp_path / "layout")
    finally:  # pytest's own clean-up of old tmp dirs recurses: it cannot remove this tree
        remove_tree(d)


def _build_and_prune(bale, store_with_busybox, ctx, out):
    r = bale("bud", "--layers", "-t", f"oci:{out}:latest", str(ctx), root=store_with_busybox, check=False,
             timeout=600)
    assert r.returncode == 0 and "internal error" not in r.stderr, r.stderr
    fs = flatten(read_layout(out, "latest")[2])
    leaf = "/deep/" + "d/" * DEPTH + "leaf"
    assert fs[leaf].content == b"bottom\n"
    assert (fs["/deep/d/d/z.txt"].content, fs["/deep/a.txt"].content, fs["/deep/e/f"].content) == \
        (b"level two\n", b"level one\n", b"sibling\n")
    r = bale("prune", "-a", root=store_with_busybox, check=False)
    assert r.returncode == 0 and "RecursionError" not in r.stderr, r.stderr


LONG_LEVELS = 40  # 40 names of 200 bytes: paths of 8 KB, twice PATH_MAX


def _long_name(i: int) -> str:
    return f"n{i:02d}" + "x" * 197


def test_copy_of_a_context_longer_than_path_max(bale, store_with_busybox, tmp_path):
    """Item 4: a context whose paths pass PATH_MAX (4096). COPY's walk, the cache digest (--layers,
    built twice: the second is a hit) and the .dockerignore walk that decides whether an excluded
    directory still holds a kept file (fsutil filter.go:336-374) reach every entry through
    directory fds, and so does a source named by such a path; 'File name too long' before."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    top = _long_name(0)
    deep = "/".join(_long_name(i) for i in range(LONG_LEVELS))
    (ctx / "Dockerfile").write_text(f"FROM busybox\nCOPY {top} /ctx/\nCOPY {deep}/keep.txt /one\n")
    (ctx / ".dockerignore").write_text("n*\n!n*/**/keep.txt\n")  # the top directory excluded, keep.txt kept
    fd = os.open(ctx, os.O_RDONLY)
    for i in range(LONG_LEVELS):
        os.mkdir(_long_name(i), dir_fd=fd)
        nxt = os.open(_long_name(i), os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    for name in ("keep.txt", "drop.txt"):
        with open(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd), "w") as fh:
            fh.write(name + "\n")
    os.symlink("keep.txt", "link", dir_fd=fd)
    os.close(fd)
    out = tmp_path / "layout"
    try:
        for attempt in range(2):
            r = bale("bud", "--layers", "-t", f"oci:{out}:latest", str(ctx), root=store_with_busybox,
                     check=False)
            assert r.returncode == 0 and "internal error" not in r.stderr, r.stderr
        assert "Using cache" in r.stdout + r.stderr, r.stdout + r.stderr
    finally:
        remove_tree(ctx)
    fs = flatten(read_layout(out, "latest")[2])
    below = "/ctx/" + "/".join(_long_name(i) for i in range(1, LONG_LEVELS)) + "/"
    assert len(below) > 4096
    assert fs[below + "keep.txt"].content == b"keep.txt\n"
    assert below + "drop.txt" not in fs  # excluded, its directory walked for the exception only
    assert below + "link" not in fs  # the symlink is not excepted either
    assert fs["/one"].content == b"keep.txt\n"  # a source named by a path longer than PATH_MAX
