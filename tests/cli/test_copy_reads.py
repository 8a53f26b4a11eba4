"""Issue 10, "no wasted hashing": a build without --layers reads each COPY source once (the
copy itself); only a cache key (--layers) reads it again, through the stat-keyed FileDigests.

Counted, not timed: the kernel's per-process I/O accounting (/proc/self/io ``rchar``: bytes
through read, pread, sendfile, copy_file_range and splice). A reaped child's counts are added to
its parent's (kernel/exit.c wait_task_zombie), so after ``subprocess.run`` returns, this test
process's own ``rchar`` has grown by everything bale and its namespace children read. The
layer commit reads the copied bytes too, so each COPY build is compared with a build whose
RUN writes as many bytes (read from /dev/urandom: one read of N, as a single-read COPY makes)
and whose commit reads the same layer size. A second read of the source shows up as about N
more (so would the tar stream of the copy before the direct one: a pipe read counts as a read); the
--layers build, which must hash the source for its key, shows that the count sees a second read.
Measured here: about 152 MiB (COPY), 150 MiB (RUN), 199 MiB (COPY --layers) for N = 48 MiB."""
from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.slow]

N = 48 << 20  # incompressible bytes in the COPY source


def _rchar() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))


@pytest.fixture
def env(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    ctx = user_tmp / "ctx"
    (ctx / "data").mkdir(parents=True)
    for i in range(3):  # a few big files and some small ones
        (ctx / "data" / f"big{i}").write_bytes(os.urandom(N // 4))
    for i in range(256):
        (ctx / "data" / f"small{i}").write_bytes(os.urandom((N // 4) // 256))
    for p in [ctx, *ctx.rglob("*")]:
        os.lchown(p, u.uid, u.gid)
    return u, root, ctx


def _build(u, root, ctx, dockerfile: str, *flags: str) -> int:
    (ctx / "Dockerfile").write_text(dockerfile)
    os.lchown(ctx / "Dockerfile", u.uid, u.gid)
    before = _rchar()
    u.bale("bud", "-q", *flags, str(ctx), root=root, timeout=600)
    return _rchar() - before


def test_a_build_without_layers_reads_each_copy_source_once(env):
    u, root, ctx = env
    copy = _build(u, root, ctx, "FROM busybox\nCOPY data /data\n")
    run = _build(u, root, ctx, f"FROM busybox\nRUN mkdir /data && head -c {N} /dev/urandom > /data/x\n")
    hashed = _build(u, root, ctx, "FROM busybox\nCOPY data /data\n", "--layers")
    mib = 1 << 20
    assert copy <= run + N // 4, (copy // mib, run // mib)  # one read of the sources, not two
    assert hashed >= copy + 3 * N // 4, (hashed // mib, copy // mib)  # the method sees a second read
