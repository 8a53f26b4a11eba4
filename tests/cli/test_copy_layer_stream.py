"""Issue 10: a COPY whose snapshot nothing reads afterwards (the last filesystem step of a stage no
other stage uses) has its layer written straight from the context (snapshotter.copylayer), no file
copied. That layer must be the very bytes the copy and its commit give: the same COPY followed by a
RUN that changes nothing takes the copy path, and both layers are compared byte for byte and read
with Python's tarfile (tests/helpers/oci_reader), never with bale's reader.

The context holds what the copy path treats specially: hard links, symlinks (one dangling), an
empty directory, a FIFO, a user.* extended attribute on a file and on a directory, modes with the
setuid bit and without group/other bits, a file over 64 MiB (sent by the kernel, not buffered), and
a .dockerignore dropping a directory and a glob. The destination is new, so its directory gets the
copy's time: --timestamp clamps it (and only it: the sources' times are older)."""
from __future__ import annotations

import os
import tarfile
import io

import pytest

from tests.helpers.oci_reader import read_layout

pytestmark = [pytest.mark.slow]

OLD = 1_600_000_000  # the sources' mtimes
EPOCH = "1700000000"  # --timestamp: after OLD, before now
BIG = (64 << 20) + 12345


@pytest.fixture
def env(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    ctx = user_tmp / "ctx"
    (ctx / "a" / "b").mkdir(parents=True)
    (ctx / "empty").mkdir()
    (ctx / "logs").mkdir()
    (ctx / "a" / "b" / "file1").write_text("one\n")
    os.setxattr(ctx / "a" / "b" / "file1", "user.note", b"kept \xff")
    os.setxattr(ctx / "a", "user.dir", b"d")
    (ctx / "a" / "hard1").write_text("linked\n")
    os.link(ctx / "a" / "hard1", ctx / "a" / "hard2")
    os.symlink("b/file1", ctx / "a" / "link")
    os.symlink("/nowhere", ctx / "a" / "dead")
    os.mkfifo(ctx / "a" / "pipe")
    (ctx / "a" / "setuid").write_text("#!/bin/sh\n")
    (ctx / "a" / "private").write_text("p\n")
    os.chmod(ctx / "a" / "private", 0o600)
    os.chmod(ctx / "a" / "b", 0o700)
    with open(ctx / "big.bin", "wb") as fh:  # sparse in the middle, data at both ends
        fh.write(os.urandom(1 << 20))
        fh.seek(BIG - (1 << 20))
        fh.write(os.urandom(1 << 20))
    (ctx / "logs" / "x.log").write_text("dropped\n")
    (ctx / "a" / "b" / "scratch.tmp").write_text("dropped\n")
    (ctx / ".dockerignore").write_text("logs\n**/*.tmp\n")
    paths = [ctx, *ctx.rglob("*")]
    for p in paths:
        os.lchown(p, u.uid, u.gid)
    os.chmod(ctx / "a" / "setuid", 0o4755)  # after the chown, which clears it
    for i, p in enumerate(sorted(paths, reverse=True)):  # children first: a dir's time is set after them
        os.utime(p, (OLD + i, OLD + i), follow_symlinks=False)
    files = user_tmp / "dockerfiles"
    files.mkdir()
    os.chown(files, u.uid, u.gid)
    return u, root, ctx, files


def _layers(u, root, ctx, files, name: str, dockerfile: str) -> tuple[list[bytes], str]:
    df = files / f"Dockerfile.{name}"
    df.write_text(dockerfile)
    os.lchown(df, u.uid, u.gid)
    r = u.bale("--log-level", "debug", "bud", "--timestamp", EPOCH, "-f", str(df), "-t", name, str(ctx),
               root=root, timeout=600)
    out = files.parent / f"layout-{name}"
    u.bale("push", name, f"oci:{out}:latest", root=root)
    _, _, layers = read_layout(out, "latest")
    return layers, r.stderr


def test_streamed_copy_layer_is_the_copied_snapshots_layer(env):
    u, root, ctx, files = env
    streamed, log = _layers(u, root, ctx, files, "streamed", "FROM busybox\nCOPY . /data/\n")
    assert "COPY layer written from the sources" in log and "COPY into the snapshot" not in log
    copied, log = _layers(u, root, ctx, files, "copied", "FROM busybox\nCOPY . /data/\nRUN true\n")
    assert "COPY layer written from the sources" not in log
    n = len(streamed) - 1  # the base's layers, then the COPY's (RUN true adds none)
    assert len(copied) == len(streamed)
    assert streamed[:n] == copied[:n]
    assert streamed[n] == copied[n]  # byte for byte: order, headers, PAX records, padding

    with tarfile.open(fileobj=io.BytesIO(streamed[n])) as t:
        members = t.getmembers()
        by = {m.name.rstrip("/"): m for m in members}
        names = [m.name.rstrip("/") for m in members]
        assert names == sorted(names, key=lambda p: p.split("/"))
        assert "data/logs" not in by and "data/a/b/scratch.tmp" not in by and "data/logs/x.log" not in by
        assert by["data"].isdir() and by["data"].mtime == int(EPOCH)  # made by the copy: clamped
        assert by["data/empty"].isdir() and by["data/empty"].mtime == OLD + sorted(
            [ctx, *ctx.rglob("*")], reverse=True).index(ctx / "empty")
        assert by["data/a/hard1"].isreg() and by["data/a/hard2"].islnk()
        assert by["data/a/hard2"].linkname == "data/a/hard1"
        assert by["data/a/link"].issym() and by["data/a/link"].linkname == "b/file1"
        assert by["data/a/dead"].linkname == "/nowhere"
        assert by["data/a/pipe"].isfifo()
        assert by["data/a/setuid"].mode == 0o4755 and by["data/a/private"].mode == 0o600
        assert by["data/a/b"].mode == 0o700
        assert by["data/a/b/file1"].pax_headers.get("SCHILY.xattr.user.note") == "kept \udcff"
        assert by["data/a"].pax_headers.get("SCHILY.xattr.user.dir") == "d"
        assert all((m.uid, m.gid) == (0, 0) for m in members)
        big = by["data/big.bin"]
        assert big.size == BIG
        assert t.extractfile(big).read() == (ctx / "big.bin").read_bytes()


def test_a_copy_into_a_directory_with_entries_takes_the_copy_path(env):
    u, root, ctx, files = env
    layers, log = _layers(u, root, ctx, files, "etc", "FROM busybox\nCOPY a/b/ /etc/\n")
    assert "COPY into the snapshot: destination /etc is not empty" in log
    with tarfile.open(fileobj=io.BytesIO(layers[-1])) as t:
        assert t.getmember("etc/file1").isreg()


def test_what_the_stream_cannot_know_falls_back_to_the_copy_midway(env):
    """A file met late in the walk with an attribute outside user.* (security.capability: the copy
    sets it translated to the namespace, or warns) ends the stream: the blob is dropped and the
    copy makes the layer, with the capability as the copy path gives it."""
    u, root, ctx, files = env
    (ctx / "zz").mkdir()
    cap = ctx / "zz" / "ping"
    cap.write_text("#!/bin/sh\n")
    os.lchown(ctx / "zz", u.uid, u.gid)
    os.lchown(cap, u.uid, u.gid)
    # VFS_CAP_REVISION_2, effective: cap_net_raw (13) permitted and effective
    os.setxattr(cap, "security.capability", bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000"))
    layers, log = _layers(u, root, ctx, files, "cap", "FROM busybox\nCOPY . /data/\n")
    assert "COPY into the snapshot: data/zz/ping: extended attribute security.capability" in log
    with tarfile.open(fileobj=io.BytesIO(layers[-1])) as t:
        names = t.getnames()
        assert "data/zz/ping" in names and "data/big.bin" in names


def test_a_device_node_gets_the_copys_error(env):
    u, root, ctx, files = env
    os.mknod(ctx / "zdev", 0o600 | 0o020000, os.makedev(1, 3))  # a character device, as /dev/null
    df = files / "Dockerfile.dev"
    df.write_text("FROM busybox\nCOPY . /data/\n")
    r = u.bale("bud", "-f", str(df), "-t", "dev", str(ctx), root=root, check=False, timeout=600)
    assert r.returncode == 1
    assert "zdev: cannot create device node" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("body", ["WORKDIR /srv/app\nCOPY . .\n", "COPY a /bin/app/\n", "COPY --chmod=750 . /opt/x/y/\n"],
                         ids=["empty-workdir", "under-existing-dir", "chmod-new-levels"])
def test_destination_levels_as_the_copy_leaves_them(env, body):
    """Kept levels (an empty WORKDIR from the layer before, /bin) and made ones (--chmod gives their
    mode, fsutil copy/copy.go:85-89) carry what the copy's snapshot has: both paths' layers match."""
    u, root, ctx, files = env
    streamed, log = _layers(u, root, ctx, files, "s", "FROM busybox\n" + body)
    assert "COPY layer written from the sources" in log
    copied, log = _layers(u, root, ctx, files, "c", "FROM busybox\n" + body + "RUN true\n")
    assert "COPY layer written from the sources" not in log
    assert len(streamed) == len(copied) and streamed == copied
