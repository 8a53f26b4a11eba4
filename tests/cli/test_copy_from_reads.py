"""Issue 10, "no wasted hashing" for COPY --from: the --layers key of a COPY --from reads the
source stage's files through the store's stat-keyed digests (treedigest, FileDigests), so a
rebuild whose source stage changed one file re-reads that file only, not the whole tree.

Counted, not timed, as in test_copy_reads: the kernel's per-process I/O accounting
(/proc/self/io ``rchar``, reaped children's counts included). The source stage makes its N bytes
with RUN (no context files, whose digests would be read too); a build-arg then rewrites one small
file. Both rebuilds copy the tree (N through copy_file_range) and commit the layer (N again); the
second runs with the digests database removed, so its key reads all N once more: the first must
read about N less. Each rebuild's result is read back with tarfile (the changed file's new
content is in the image: a stat-keyed hit never hides a change)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.oci_reader import flatten, read_layout

pytestmark = [pytest.mark.slow]

N = 48 << 20  # incompressible bytes in the source stage
SMALL = 256

DOCKERFILE = f"""FROM busybox AS b
RUN mkdir /data && for i in 0 1 2; do head -c {N // 4} /dev/urandom > /data/big$i; done && \\
    for i in $(seq 0 {SMALL - 1}); do head -c {N // 4 // SMALL} /dev/urandom > /data/small$i; done
ARG V=1
RUN echo $V > /data/small0
FROM busybox
COPY --from=b /data /data
"""


def _rchar() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))


def _build(u, root: Path, ctx: Path, v: int) -> int:
    before = _rchar()
    u.bale("bud", "-q", "--layers", "--build-arg", f"V={v}", "-t", "out", str(ctx), root=root, timeout=600)
    return _rchar() - before


def _small0(u, root: Path, tmp: Path, tag: str) -> bytes:
    u.bale("push", "out", f"oci:{tmp}/{tag}:latest", root=root)
    _, _, layers = read_layout(tmp / tag, "latest")
    fs = flatten(layers)
    assert len([p for p in fs if p.startswith("/data/")]) == 3 + SMALL
    return fs["/data/small0"].content


def test_layers_rebuild_reads_only_the_changed_source_file(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    for p in (ctx, ctx / "Dockerfile"):
        os.lchown(p, u.uid, u.gid)
    _build(u, root, ctx, 1)  # primes the cache and the digests
    cached = _build(u, root, ctx, 2)
    assert _small0(u, root, user_tmp, "v2") == b"2\n"
    assert (root / "digests.db").is_file()
    for name in ("digests.db", "digests.db-wal", "digests.db-shm"):
        (root / name).unlink(missing_ok=True)
    uncached = _build(u, root, ctx, 3)
    assert _small0(u, root, user_tmp, "v3") == b"3\n"
    mib = 1 << 20
    # the key of the second rebuild read the whole tree again, the first one did not
    assert uncached >= cached + 3 * N // 4, (cached // mib, uncached // mib)
