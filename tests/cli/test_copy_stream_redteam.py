"""Red-team cases for the streamed COPY layer (snapshotter.copylayer, issue 10): each build is
made twice, once as given (the COPY is the stage's last filesystem step: its layer is written
from the sources) and once with ``RUN true`` appended (the copy and its commit make it; the RUN
changes nothing so adds no layer). Both images' layers are compared byte for byte, read with
Python's tarfile through tests/helpers/oci_reader (never bale's reader)."""
from __future__ import annotations

import io
import os
import tarfile

import pytest

from tests.helpers.oci_reader import read_layout

pytestmark = [pytest.mark.slow]

OLD = 1_600_000_000
EPOCH = "1700000000"

BUILDER = """FROM busybox AS b
COPY tree /tree
RUN chown -R 3001:3002 /tree/d1 && mkdir -p /made/deep && chown 33:44 /made && cp -a /tree/d1 /made/deep/
"""


@pytest.fixture
def env(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    ctx = user_tmp / "ctx"
    for d in range(2):
        (ctx / "tree" / f"d{d}").mkdir(parents=True)
        for f in range(3):
            (ctx / "tree" / f"d{d}" / f"f{f}").write_text(f"{d}/{f}\n")
    paths = [ctx, *ctx.rglob("*")]
    for p in paths:
        os.lchown(p, u.uid, u.gid)
        os.utime(p, (OLD, OLD), follow_symlinks=False)
    files = user_tmp / "dockerfiles"
    files.mkdir()
    os.chown(files, u.uid, u.gid)
    return u, root, ctx, files


def _build(env, name: str, dockerfile: str, *extra: str) -> tuple[list[bytes], str]:
    u, root, ctx, files = env
    df = files / f"Dockerfile.{name}"
    df.write_text(dockerfile)
    os.lchown(df, u.uid, u.gid)
    glob = [a for a in extra if a.startswith("--storage-driver")]
    extra = tuple(a for a in extra if a not in glob)
    r = u.bale(*glob, "--log-level", "debug", "bud", *extra, "--timestamp", EPOCH, "-f", str(df), "-t", name, str(ctx),
               root=root, timeout=600)
    out = files.parent / f"layout-{name}"
    u.bale(*glob, "push", name, f"oci:{out}:latest", root=root)
    return read_layout(out, "latest")[2], r.stderr


def _same(env, dockerfile: str, *extra: str, streams: bool = True) -> list[bytes]:
    """Both builds' layers, asserted equal; ``streams``: whether the first build's COPY is written
    from the sources (else it falls back to the copy)."""
    streamed, log = _build(env, "streamed", dockerfile, *extra)
    assert ("layer written from the s" in log) is streams, log
    if "FROM scratch" in dockerfile:  # a later stage reads it: the copy path
        copied, log = _build(env, "copied", dockerfile.replace("FROM scratch", "FROM scratch AS s") + "FROM s\n",
                             *extra)
    else:
        copied, log = _build(env, "copied", dockerfile + "RUN true\n", *extra)
    assert "layer written from the s" not in log
    assert len(copied) == len(streamed)
    if streamed[-1] != copied[-1]:
        def ls(b: bytes) -> list[tuple[object, ...]]:
            with tarfile.open(fileobj=io.BytesIO(b)) as t:
                return [(m.name, m.type, oct(m.mode), m.uid, m.gid, m.mtime, m.linkname, m.pax_headers)
                        for m in t.getmembers()]
        assert ls(streamed[-1]) == ls(copied[-1])
    assert streamed == copied
    return streamed


SETGID = "FROM busybox\nRUN mkdir -m 2775 /sg && chgrp 50 /sg\n"


@pytest.mark.parametrize("copy", ["COPY tree /sg/new/deep/", "COPY --chmod=700 tree /sg/new/",
                                  "COPY --from=b /tree /sg/new/deep/"], ids=["context", "chmod", "from"])
def test_a_level_made_in_a_setgid_directory_takes_its_group(env, copy):
    """mkdir in a set-group-ID directory gives the new directory that directory's group (Linux
    inode_init_owner; BuildKit's fsutil copy MkdirAll leaves it so when no --chown is given,
    fsutil copy/copy.go MkdirAll -> os.MkdirAll, chown only with a user): the copy path's /sg/new
    has group 50, so the streamed layer must not say 0 (it falls back to the copy)."""
    layers = _same(env, (BUILDER if "--from" in copy else "") + SETGID + copy + "\n", streams=False)
    with tarfile.open(fileobj=io.BytesIO(layers[-1])) as t:
        assert t.getmember("sg/new").gid == 50


CASES = {
    "chown-name": "FROM busybox\nCOPY --chown=bin:daemon tree /x/\n",
    "wildcard-collision": "FROM busybox\nCOPY tree/d*/f1 /x/\n",
    "kept-levels": "FROM busybox\nCOPY tree /var/spool/mail/\n",
    "same-stage-levels": "FROM busybox\nRUN mkdir -p /e/f && chmod 700 /e && chown 9:9 /e/f\nCOPY tree /e/f/g/\n",
    "scratch-root": "FROM scratch\nCOPY tree /\n",
    "from-through-links": BUILDER + "RUN ln -s /tree /tl && ln -s /tree/d0 /tree/dl\nFROM busybox\n"
                          "COPY --from=b /tl/dl /x/\n",
    "from-chown-name": BUILDER + "FROM busybox\nCOPY --from=b --chown=nobody:nogroup /tree /x/\n",
    "setgid-dest": SETGID + "COPY tree /sg/\n",
    "setgid-chown": SETGID + "COPY --chown=7:8 tree /sg/new/\n",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_streamed_layer_is_the_copy_paths(env, case):
    """Cases that stream (or fall back) and must give the copy path's bytes either way."""
    _same(env, CASES[case], streams=case not in ("wildcard-collision", "setgid-chown"))


@pytest.mark.parametrize("dockerfile", ["FROM scratch\nCOPY rootfs /\n", "FROM busybox\nCOPY rootfs/dev /dev/\n",
                                        BUILDER + "COPY rootfs /rootfs\nFROM scratch\nCOPY --from=b /rootfs /\n"],
                         ids=["scratch-rootfs", "dev", "from"])
def test_new_empty_sandbox_paths_fall_back_to_the_copy(env, dockerfile):
    """The commit drops new empty /proc, /sys, /dev/shm, /run, /etc/hosts... (snapshots.SANDBOX_PATHS,
    diff.filter_sandbox_paths: what the sandbox mounts over); the streamed layer kept them, so the
    same COPY gave another image when it was the stage's last step. It falls back to the copy now.
    (BuildKit's COPY keeps them: its FileOp diff filters nothing; the copy path's dropping is a
    deviation of its own, left as it is here.)"""
    u, root, ctx, files = env
    r = ctx / "rootfs"
    for d in ("proc", "sys", "run", "dev/shm", "dev/pts", "etc", "bin"):
        (r / d).mkdir(parents=True)
    (r / "etc" / "hosts").write_text("")
    (r / "bin" / "x").write_text("x")
    for p in [ctx, *ctx.rglob("*")]:
        os.lchown(p, u.uid, u.gid)
    layers = _same(env, dockerfile, streams=False)
    if "busybox\nCOPY rootfs/dev" not in dockerfile:
        with tarfile.open(fileobj=io.BytesIO(layers[-1])) as t:
            assert "bin/x" in t.getnames()


@pytest.mark.parametrize("dockerfile", ["FROM busybox\nCOPY odd /x/\n", "FROM scratch\nCOPY odd /x/\n",
                                        BUILDER + "COPY odd /odd\nFROM busybox\nCOPY --from=b /odd /x/\n"],
                         ids=["busybox", "scratch", "from"])
def test_whiteout_names_fall_back_to_the_copy(env, dockerfile):
    """Files named as whiteouts (.wh.NAME, .wh..wh..opq) are read as whiteouts by the copy path's
    commit (a marker with time 0, the opaque marker gone) while the stream wrote them as files:
    another image for the same COPY. Such a copy falls back to the copy now."""
    u, root, ctx, files = env
    r = ctx / "odd"
    (r / "sub").mkdir(parents=True)
    (r / ".wh.foo").write_text("w")
    (r / "sub" / ".wh..wh..opq").write_text("")
    (r / "f").write_text("f")
    for p in [ctx, *ctx.rglob("*")]:
        os.lchown(p, u.uid, u.gid)
    _same(env, dockerfile, streams=False)
