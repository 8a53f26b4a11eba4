"""COPY --chown with negative ids, built for real as the unprivileged user and read back with the
stdlib tar reader (tests/helpers/oci_reader).

Spec (moby/buildkit 73ed6825, tonistiigi/fsutil 6d9dc2eb): dockerfile2llb passes the --chown text
to llb.WithUser (frontend/dockerfile/dockerfile2llb/convert_copy.go:54-55); client/llb/fileop.go:
257-266 parseUID reads each side with strconv.ParseInt(str, 10, 32), so "-1" is the id -1, not a
name, and UserOpt.marshal (fileop.go:329) sends it as uint32(-1) = 4294967295;
solver/llbsolver/ops/user_linux.go:68-70 and 113-114 take it as uid (and gid) unchanged; fsutil
copy/copy_linux.go copyFileInfo then calls os.Lchown(p, 4294967295, ...) (copy/mkdir_unix.go:44),
which lchown(2) reads as (uid_t)-1, "leave it": the copied entry keeps the owner the copier
created it with, root's. So -1 ends as 0 on its side, also for a source another stage owns."""
from __future__ import annotations

import os

import pytest

from tests.helpers.oci_reader import flatten, read_layout

pytestmark = [pytest.mark.slow]


@pytest.fixture
def build(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)

    def run(dockerfile: str, name: str, check: bool = True):
        ctx = user_tmp / f"ctx-{name}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(dockerfile)
        (ctx / "f").write_text("f\n")
        for p in [ctx, *ctx.rglob("*")]:
            os.lchown(p, u.uid, u.gid)
        r = u.bale("bud", "-t", f"oci:{user_tmp}/{name}:latest", str(ctx), root=root, check=check)
        if not check:
            return r, None
        return r, flatten(read_layout(user_tmp / name, "latest")[2])
    return run


def test_chown_minus_one_keeps_roots_owner(build):
    _, fs = build("FROM busybox AS src\nRUN mkdir /d && echo x > /d/x && chown -R 7:8 /d\n"
                  "FROM busybox\n"
                  "COPY --chown=-1 f /a\n"
                  "COPY --chown=-1:5 f /b\n"
                  "COPY --chown=5:-1 f /c\n"           # 5:0, where a missing group name gives 5:5
                  "COPY --chown=nobody:-1 f /e\n"      # busybox's nobody is 65534:65534
                  "COPY --chown=-1:-1 f /n/sub/g\n"    # the directories it makes too
                  "COPY --from=src --chown=-1 /d /fromstage\n"
                  "COPY --chown=+5 f /p\n"             # ParseInt takes a sign
                  "COPY --chown=5:nosuchgroup f /q\n", "neg")
    owner = {p: (fs[p].info.uid, fs[p].info.gid) for p in
             ("/a", "/b", "/c", "/e", "/n", "/n/sub", "/n/sub/g", "/fromstage", "/fromstage/x", "/p", "/q")}
    assert owner == {"/a": (0, 0), "/b": (0, 5), "/c": (5, 0), "/e": (65534, 0), "/n": (0, 0),
                     "/n/sub": (0, 0), "/n/sub/g": (0, 0), "/fromstage": (0, 0), "/fromstage/x": (0, 0),
                     "/p": (5, 5), "/q": (5, 5)}



def test_chown_minus_two_is_an_id_outside_the_range(build):
    """-2 is uint32 4294967294, a real id (fileop.go:329): a rootful daemon sets it; rootless, as
    bale is, no user namespace maps it, so the copy fails (fsutil's Lchown gets EINVAL there):
    one line naming the Dockerfile line, exit 1."""
    r, _ = build("FROM busybox\nCOPY --chown=-2 f /a\n", "neg2", check=False)
    assert r.returncode == 1, r.stderr
    line = [l for l in r.stderr.splitlines() if l.startswith("bale:")]
    assert len(line) == 1 and line[0].startswith("bale: Dockerfile:2: COPY: ") and "4294967294" in line[0], r.stderr
    assert "Traceback" not in r.stderr
