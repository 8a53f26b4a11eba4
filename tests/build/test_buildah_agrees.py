"""Issue 8 classes 1 (owners, mount owners), 3, 4, 5 (RUN mounts), 7 (ONBUILD of a stage), 8
(duplicate stage names), 9 and 10 where they need RUN steps, built by bale and by Debian's
buildah 1.28 (tests/helpers/buildah.py), both rootless as the unprivileged test user, both read
back with the stdlib tar reader. Where buildah agrees with BuildKit the flattened filesystems
(type, owner, mode, content) and configs are compared; where it does not, the test says how, and
BuildKit's source line decides (moby/buildkit 73ed6825)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.helpers.buildah import Buildah
from tests.helpers.oci_reader import Entry, flatten, read_layout

pytestmark = [pytest.mark.slow]

Built = tuple[Any, dict[str, Any], dict[str, Entry], list[bytes]]


@pytest.fixture
def env(unprivileged_user: Any, user_tmp: Path, busybox_layout: Path) -> Iterator[tuple[Callable[..., Built], Buildah]]:
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    bh = Buildah(u, user_tmp, user_tmp / "busybox-layout")

    def bale(dockerfile: str, name: str, *args: str, files: dict[str, str] | None = None) -> Built:
        ctx = user_tmp / f"ctx-{name}"
        ctx.mkdir(exist_ok=True)
        (ctx / "Dockerfile").write_text(dockerfile)
        for rel, text in (files or {}).items():
            (ctx / rel).write_text(text)
        for p in [ctx, *ctx.rglob("*")]:
            os.lchown(p, u.uid, u.gid)
        r = u.bale("bud", *args, "-t", name, str(ctx), root=root, timeout=600)
        u.bale("push", name, f"oci:{user_tmp}/{name}-out:latest", root=root)
        _, config, layers = read_layout(user_tmp / f"{name}-out", "latest")
        return r, config, flatten(layers), layers
    try:
        yield bale, bh
    finally:
        bh.close()


def _entries(fs: dict[str, Entry], paths: list[str]) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for p in paths:
        if p in fs:
            i = fs[p].info
            out[p] = (i.type, i.uid, i.gid, i.mode & 0o7777, fs[p].content)
    return out


def _added(fs: dict[str, Entry], layers: list[bytes]) -> list[str]:
    base = flatten(layers[:1])
    return sorted(p for p in fs if p not in base)


ONBUILD = """FROM busybox AS parent
ONBUILD RUN echo triggered > /trig
ONBUILD ENV T=1
RUN echo parent > /parent
FROM parent AS child
ONBUILD RUN echo later
RUN echo $T > /t
"""


def test_onbuild_of_a_stage_as_buildah_docker_format(env):  # type: ignore[no-untyped-def]
    """Class 7. BuildKit: convert.go:558-579 runs the base stage's ONBUILD triggers at the start of
    the child and clears the inherited list; convert.go:1588-1590 keeps the child's own ONBUILD in
    the image config whatever the media type (dockerspec.DockerOCIImage carries OnBuild for OCI
    configs too). buildah agrees with --format docker only: in its default OCI format it drops
    every ONBUILD ("ONBUILD is not supported for OCI image format"), so the parent's triggers never
    run in the child and the child lists none; BuildKit wins, so bale writes OnBuild in its OCI config."""
    bale, bh = env
    _, ours_cfg, ours, ours_layers = bale(ONBUILD, "onbuild")
    theirs_cfg, theirs, _ = bh.build(bh.work / "ctx-onbuild", "onbuild", "--format", "docker")
    paths = _added(ours, ours_layers)
    assert paths == ["/parent", "/t", "/trig"]
    assert _entries(ours, paths) == _entries(theirs, paths)
    assert ours["/trig"].content == b"triggered\n" and ours["/t"].content == b"1\n"
    pick = lambda c: {k: c["config"].get(k) for k in ("Env", "OnBuild", "Cmd")}  # noqa: E731
    assert pick(ours_cfg) == pick(theirs_cfg)
    assert ours_cfg["config"]["OnBuild"] == ["RUN echo later"]


DUPLICATE = """FROM busybox AS dup
RUN echo first > /which
FROM busybox AS dup
RUN echo second > /which
FROM dup AS on-dup
RUN cat /which > /base-was
FROM busybox
COPY --from=dup /which /which
COPY --from=on-dup /base-was /base-was
"""


def test_duplicate_stage_names_as_buildah(env):  # type: ignore[no-untyped-def]
    """Class 8. BuildKit: the name means the last stage of that name (convert.go:1247-1256
    dispatchStates.addState overwrites statesByName), for COPY --from and for FROM alike, and the
    build goes on with a DuplicateStageName lint warning (validations.go validateStageNames).
    buildah 1.28 agrees for COPY --from (compared). It has no such lint (only bale's warning is
    checked), and a FROM of the name is not compared: buildah runs stages concurrently and takes
    the image of whichever stage of that name finished last (imagebuildah/executor.go, imageMap
    filled in completion order), so ``FROM dup`` gave "first" or "second" from run to run here.
    BuildKit wins: bale's is always the last stage."""
    bale, bh = env
    r, _, ours, ours_layers = bale(DUPLICATE, "dup")
    assert "DuplicateStageName" in r.stderr and "Dockerfile:3" in r.stderr
    assert _added(ours, ours_layers) == ["/base-was", "/which"]
    assert ours["/which"].content == ours["/base-was"].content == b"second\n"
    _, theirs, _ = bh.build(bh.work / "ctx-dup", "dup")
    assert _entries(ours, ["/which"]) == _entries(theirs, ["/which"])


MOUNTS = """FROM busybox AS src
RUN mkdir /x
FROM busybox
RUN mkdir -m 777 /out
USER 1234:5678
RUN --mount=type=cache,target=/c,uid=1234,gid=5678,mode=0750 touch /c/mine && stat -c '%u:%g:%a' /c > /out/opts
USER 0
RUN --mount=type=cache,target=/d stat -c '%u:%g:%a' /d > /out/plain
RUN --mount=type=secret,id=tok,target=/s/e/cret,uid=5,gid=6,mode=0440 \\
    stat -c '%u:%g:%a' /s/e/cret > /out/secret && cat /s/e/cret > /out/secret-value
RUN --mount=type=secret,id=tok cat /run/secrets/tok > /out/again && \\
    stat -c '%u:%g:%a' /run/secrets/tok > /out/again-mode
RUN --mount=type=bind,source=.,target=/ctx true
RUN --mount=type=bind,source=.,target=/m1/deep/er true
RUN --mount=type=cache,target=/var/cache/new/c true
RUN --mount=type=tmpfs,target=/t/mp true
RUN --mount=type=bind,from=src,source=/x,target=/fromstage true
RUN --mount=type=bind,source=.,target=/kept/stub echo hi > /kept/file
"""
OUT = ["/out", "/out/opts", "/out/plain", "/out/secret", "/out/secret-value", "/out/again", "/out/again-mode",
       "/kept", "/kept/file"]
# what buildah 1.28 leaves and BuildKit does not (see the test's docstring)
BUILDAH_LEFTOVERS = ["/m1", "/m1/deep", "/s", "/s/e", "/run", "/run/secrets", "/t", "/var/cache", "/var/cache/new",
                     "/dev", "/proc", "/sys", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]


def test_run_mounts_as_buildah(env, user_tmp):  # type: ignore[no-untyped-def]
    """Class 1 (mount owners) and class 5 (mount points). buildah agrees with BuildKit on what the
    commands see: a cache mount with uid/gid/mode is a directory made with them and one without is
    0755 root's (convert_runmount.go:48-62, 134-136); a secret file has the given uid/gid/mode, 0400
    root's by default (convert_secrets.go:55-68), and one secret id mounts in two RUN steps.

    They differ on what is left in the image: BuildKit removes every mount point it had to create,
    each missing parent level included, and the /etc/hosts and /etc/resolv.conf stubs
    (executor/stubs.go:15-60 MountStubsCleaner: the loop over filepath.Dir collects each level;
    the cleaner removes each that is still empty). buildah 1.28 removes only the mount target
    itself and keeps the parents it made (/m1/deep for /m1/deep/er, /run/secrets for a secret,
    /var/cache/new for a cache), and the /dev, /proc, /sys and /etc stubs of its runtime. BuildKit
    wins: bale's image has none of them, and buildah's leftovers are checked to still be what
    this says."""
    bale, bh = env
    secret = user_tmp / "secret.txt"
    secret.write_text("s3cret\n")
    os.chown(secret, bh.user.uid, bh.user.gid)
    _, _, ours, ours_layers = bale(MOUNTS, "mounts", "--secret", f"id=tok,src={secret}", files={"f": "x\n"})
    _, theirs, theirs_layers = bh.build(bh.work / "ctx-mounts", "mounts", "--secret", f"id=tok,src={secret}")
    assert _added(ours, ours_layers) == sorted(OUT)
    assert _entries(ours, OUT) == _entries(theirs, OUT)
    assert {p: ours[p].content for p in OUT[1:7]} == {
        "/out/opts": b"1234:5678:750\n", "/out/plain": b"0:0:755\n", "/out/secret": b"5:6:440\n",
        "/out/secret-value": b"s3cret\n", "/out/again": b"s3cret\n", "/out/again-mode": b"0:0:400\n"}
    assert sorted(set(_added(theirs, theirs_layers)) - set(OUT)) == sorted(BUILDAH_LEFTOVERS)


def test_ownership_symlinked_paths_and_workdir_as_buildah(env):  # type: ignore[no-untyped-def]
    """Classes 1, 3, 4, 9 and 10 with the RUN steps they need (tests/cli/test_copy_docker_exact.py
    builds the same Dockerfile against BuildKit's values, cited per row there): --chown by name,
    created parents' owners, COPY --from of a RUN-made tree, destinations through a symlink whose
    target is missing, the same layer twice, WORKDIR's owner. buildah agrees on every row but one:
    ``COPY *foo *.txt /testdir2`` (several sources, a destination without "/") is a directory in
    buildah, a file (the last source) in BuildKit, which sends every source to the same path
    (convert_copy.go:127-291 has no several-sources check; fsutil copy.go:128-160). BuildKit wins."""
    from tests.cli.test_copy_docker_exact import OWNERSHIP_DOCKERFILE, OWNERSHIP_ROWS, _row
    bale, bh = env
    files = {"f": "f\n", "a.txt": "a\n", "b.txt": "b\n", ".hidden.txt": "hidden\n", "x.foo": "foo\n"}
    ctx = bh.work / "ctx-own"
    (ctx / "dir").mkdir(parents=True)
    (ctx / "dir" / "inner.txt").write_text("inner\n")
    _, ours_cfg, ours, _ = bale(OWNERSHIP_DOCKERFILE, "own", files=files)
    theirs_cfg, theirs, _ = bh.build(ctx, "own")
    differ = {"/testdir2"}
    rows = dict(OWNERSHIP_ROWS)
    assert {p: _row(ours, p) for p in rows if p in ours} == rows
    assert {p: _row(theirs, p) for p in rows if p not in differ and p in theirs} == \
        {p: v for p, v in rows.items() if p not in differ}
    assert _row(theirs, "/testdir2")[0] == "dir" and _row(ours, "/testdir2") == rows["/testdir2"]
    assert ours_cfg["config"]["WorkingDir"] == theirs_cfg["config"]["WorkingDir"] == "/var/lib/app/v3"
