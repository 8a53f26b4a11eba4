"""RUN mounts leave nothing behind (issue 8 class 5).

BuildKit creates a stub for every mount target the image lacks and removes what it
created after the command, parents included when the mount is recursive, as long as
the stub is still empty: moby/buildkit executor/stubs.go ``MountStubsCleaner`` (the
``for`` loop over ``filepath.Dir`` collects every missing level; the returned closure
removes each only if it is an empty directory or an empty file). Built by the
unprivileged test user, read from the OCI layout with Python's tarfile.
"""
from __future__ import annotations

import os

import pytest

from tests.helpers.oci_reader import flatten, read_layout

pytestmark = [pytest.mark.slow, pytest.mark.rootless]

# (RUN instruction, paths that must not be in the image, paths that must be)
CASES = [
    ("RUN --mount=type=bind,source=.,target=/ctx true", ["ctx"], []),
    ("RUN --mount=type=bind,source=.,target=/m1/deep/er true", ["m1", "m1/deep", "m1/deep/er"], []),
    ("RUN --mount=type=cache,target=/var/cache/new/c true", ["var/cache/new"], []),
    ("RUN --mount=type=tmpfs,target=/t/mp true", ["t"], []),
    ("RUN --mount=type=secret,id=tok,target=/s/e/cret true", ["s"], []),
    ("RUN --mount=type=secret,id=tok true", ["run/secrets", "run/secrets/tok"], []),
    ("RUN --mount=type=bind,from=src,source=/x,target=/fromstage true", ["fromstage"], []),
    # a parent the command wrote into is the command's, and stays; the empty stub under it goes
    ("RUN --mount=type=bind,source=.,target=/kept/stub echo hi > /kept/file", ["kept/stub"],
     ["kept", "kept/file"]),
]


@pytest.mark.parametrize("run,absent,present", CASES, ids=[c[0].split()[1] + "-" + str(i)
                                                            for i, c in enumerate(CASES)])
def test_run_mount_points_leave_nothing(unprivileged_user, user_tmp, busybox_layout, run, absent, present):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("x\n")
    (user_tmp / "secret").write_text("s3cret\n")
    (ctx / "Dockerfile").write_text("FROM busybox AS src\nRUN mkdir /x\nFROM busybox\n" + run + "\n")
    for p in [ctx, *ctx.rglob("*"), user_tmp / "secret"]:
        os.lchown(p, u.uid, u.gid)
    u.bale("bud", "--layers=false", "--secret", f"id=tok,src={user_tmp / 'secret'}", "-t", "stubs",
           str(ctx), root=root, timeout=600)
    out = user_tmp / "layout"
    u.bale("push", "stubs", f"oci:{out}:latest", root=root)
    _, _, layers = read_layout(out, "latest")
    base_names = set(flatten(layers[:1]))
    fs = flatten(layers)
    for p in absent:
        p = "/" + p
        assert p not in fs, f"{p} left in the image by {run!r}"
    for p in present:
        p = "/" + p
        assert p in fs, f"{p} missing after {run!r}"
    # nothing else changed: the last layer (if any) holds only what the command wrote
    new = set(fs) - base_names
    assert new == {"/" + p for p in present}, (run, sorted(new))
