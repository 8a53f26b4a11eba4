"""Issue 10: a COPY --from that is the last filesystem step of a stage nothing else reads has its
layer written straight from the source stage's snapshot (snapshots.copy_between_layer_to_fd over
snapshotter.copylayer), no file copied. It must be the very bytes the copy and its commit give:
the same COPY --from followed by a RUN that changes nothing takes the copy path, and the two
layers are compared byte for byte, then read with Python's tarfile (never bale's reader).

The builder stage's tree has owners set by RUN chown, a set-uid file, a 0700 directory, hard
links, symlinks (one dangling), an empty directory, user.* xattrs on a file and a directory, and
whiteouts in its RUN layer (the copy reads the merged view). --timestamp clamps the times the
builder's RUN gave (and the destination the copy makes)."""
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
RUN chown -R 1001:1002 /tree/d1 && chmod 4755 /tree/d0/f0 && mkdir -m 0700 /tree/private && \\
    echo s > /tree/private/s && ln /tree/d0/f1 /tree/hard && ln -s d0/f2 /tree/rel && \\
    ln -s /nowhere /tree/dead && mkdir /tree/empty && rm /tree/d2/f0 && rm -r /tree/d3
"""


@pytest.fixture
def env(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    ctx = user_tmp / "ctx"
    for d in range(4):
        (ctx / "tree" / f"d{d}").mkdir(parents=True)
        for f in range(30):
            (ctx / "tree" / f"d{d}" / f"f{f}").write_text(f"{d}/{f}\n" * (f + 1))
    paths = [ctx, *ctx.rglob("*")]
    for p in paths:
        os.lchown(p, u.uid, u.gid)
        os.utime(p, (OLD, OLD), follow_symlinks=False)
    os.setxattr(ctx / "tree" / "d0" / "f3", "user.note", b"kept")
    os.setxattr(ctx / "tree" / "d1", "user.dir", b"d")
    files = user_tmp / "dockerfiles"
    files.mkdir()
    os.chown(files, u.uid, u.gid)
    return u, root, ctx, files


def _layers(env, name: str, dockerfile: str) -> tuple[list[bytes], str]:
    u, root, ctx, files = env
    df = files / f"Dockerfile.{name}"
    df.write_text(dockerfile)
    os.lchown(df, u.uid, u.gid)
    r = u.bale("--log-level", "debug", "bud", "--timestamp", EPOCH, "-f", str(df), "-t", name, str(ctx),
               root=root, timeout=600)
    out = files.parent / f"layout-{name}"
    u.bale("push", name, f"oci:{out}:latest", root=root)
    return read_layout(out, "latest")[2], r.stderr


@pytest.mark.parametrize("chown", ["", "--chown=7:8 "])
def test_streamed_copy_from_layer_is_the_copied_snapshots_layer(env, chown):
    copy = f"FROM busybox\nCOPY --from=b {chown}/tree /opt/t\n"
    streamed, log = _layers(env, "streamed", BUILDER + copy)
    assert "COPY --from: layer written from the source snapshot" in log
    assert "COPY --from into the snapshot" not in log
    copied, log = _layers(env, "copied", BUILDER + copy + "RUN true\n")
    assert "COPY --from: layer written from the source snapshot" not in log
    assert len(copied) == len(streamed)
    assert streamed == copied  # byte for byte: order, headers, PAX records, padding

    with tarfile.open(fileobj=io.BytesIO(streamed[-1])) as t:
        by = {m.name.rstrip("/"): m for m in t.getmembers()}
    own = (7, 8) if chown else None
    assert by["opt"].isdir() and by["opt/t"].isdir() and by["opt/t"].mtime == int(EPOCH)
    assert (by["opt/t/d1/f5"].uid, by["opt/t/d1/f5"].gid) == (own or (1001, 1002))
    assert (by["opt/t/d0/f5"].uid, by["opt/t/d0/f5"].gid) == (own or (0, 0))
    assert by["opt/t/d0/f0"].mode == 0o4755 and by["opt/t/private"].mode == 0o700
    assert by["opt/t/d0/f5"].mtime == OLD and by["opt/t/private/s"].mtime == int(EPOCH)
    assert by["opt/t/d0/f1"].isreg() and by["opt/t/hard"].islnk() and by["opt/t/hard"].linkname == "opt/t/d0/f1"
    assert by["opt/t/rel"].linkname == "d0/f2" and by["opt/t/dead"].linkname == "/nowhere"
    assert by["opt/t/empty"].isdir()
    assert by["opt/t/d0/f3"].pax_headers.get("SCHILY.xattr.user.note") == "kept"
    assert by["opt/t/d1"].pax_headers.get("SCHILY.xattr.user.dir") == "d"
    assert "opt/t/d2/f0" not in by and "opt/t/d2/f1" in by and "opt/t/d3" not in by
    assert not any(n.rsplit("/", 1)[-1].startswith(".wh.") for n in by)


def test_a_copy_from_into_a_directory_with_entries_takes_the_copy_path(env):
    layers, log = _layers(env, "etc", BUILDER + "FROM busybox\nCOPY --from=b /tree/d0 /etc/\n")
    assert "COPY --from into the snapshot: destination /etc is not empty" in log
    assert "COPY --from: layer written from the source snapshot" not in log
    with tarfile.open(fileobj=io.BytesIO(layers[-1])) as t:
        assert t.getmember("etc/f1").isreg()
