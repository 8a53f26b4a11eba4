"""Hostile RUN steps, through `bale bud`, in every isolation this host offers:
rootless (the unprivileged user), oci (runc in bale's user namespace) and
chroot (real root, the pod mode). Each RUN tries to break out: a file planted
outside the build root, /proc/1/root and bale's own /proc entries, bale's
environment (a token set in bale's env), bale's fds, killing its parent,
mount/unshare/setns/pivot_root, ptrace, chroot twice, writing outside through a
symlink (also through an rw bind of a context holding a symlink out). Every
attempt prints "held ..." or "ESCAPED ..."; the build must finish with no
ESCAPED line, the planted file unread and unchanged, the token unseen, and
nothing written outside.

The break-out helper is testdata/hostile.c, built static with gcc (ci/lib.sh)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.oci_reader import flatten, read_layout

pytestmark = [pytest.mark.slow]
HERE = Path(__file__).parent

SHELL_ATTACKS = r"""
FROM busybox
COPY hostile /hostile
RUN /hostile {planted} {needle}
RUN for f in /proc/[0-9]*/environ; do tr '\0' '\n' < $f; done 2>/dev/null | grep -q {token} \
    && echo "ESCAPED environ" || echo "held environ"
RUN for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < $f; echo; done 2>/dev/null | grep -q "builder[.]cli[.]main" \
    && echo "ESCAPED sees bale's processes" || echo "held bale's processes"
RUN for f in /proc/[0-9]*/fd/*; do case $f in /proc/self/*|/proc/$$/*) continue;; esac; \
    (echo junk > $f) 2>/dev/null; done; echo "held fds (bale still has to finish)"
RUN if [ "$PPID" -gt 1 ]; then kill -9 $PPID 2>/dev/null && echo "ESCAPED kill parent" || echo "held kill parent"; \
    else echo "held kill parent: outside the pid namespace"; fi
RUN mkdir -p /mnt/x && (mount -t tmpfs none /mnt/x 2>/dev/null && echo "ESCAPED mount" || echo "held mount")
RUN ln -s {planted_dir} /link && (echo pwned > /link/written 2>/dev/null; cat /link/planted 2>/dev/null | \
    grep -q {needle} && echo "ESCAPED symlink read" || echo "held symlink")
"""

BIND_ATTACK = r"""
RUN --mount=type=bind,rw,target=/c (echo pwned > /c/out/written2; cat /c/out/planted 2>/dev/null | \
    grep -q {needle} && echo "ESCAPED bind symlink" || echo "held bind symlink"); rm -rf /c/Dockerfile
"""


@pytest.fixture(scope="module")
def hostile_bin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "hostile"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(HERE / "testdata" / "hostile.c")], check=True)
    return out


def _setup(base: Path, hostile_bin: Path, owner: tuple[int, int] | None, with_bind: bool) -> tuple[Path, Path, str]:
    needle = "PLANTED" + os.urandom(6).hex()
    outside = base / "outside"
    outside.mkdir()
    (outside / "planted").write_text(needle + "\n")
    ctx = base / "ctx"
    ctx.mkdir()
    shutil.copy(hostile_bin, ctx / "hostile")
    token = "TOKEN" + os.urandom(6).hex()
    text = SHELL_ATTACKS.format(planted=outside / "planted", planted_dir=outside, needle=needle, token=token)
    if with_bind:
        os.symlink(str(outside), ctx / "out")
        text += BIND_ATTACK.format(needle=needle)
    (ctx / "Dockerfile").write_text(text.lstrip())
    for p in [base, outside, *outside.iterdir(), ctx, *ctx.iterdir()]:
        if not p.is_symlink():
            os.chmod(p, p.stat().st_mode | 0o755)
        if owner:
            os.lchown(p, *owner)
    return ctx, outside, token


def _check(r: subprocess.CompletedProcess, outside: Path, needle: str, token: str, expect_held: int) -> None:
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    lines = out.splitlines()
    assert [l for l in lines if l.startswith("ESCAPED")] == [], out
    assert len([l for l in lines if l.startswith("held ")]) >= expect_held, out
    assert token not in out.replace(f"grep -q {token}", "")
    assert needle not in out.replace(f"grep -q {needle}", "").replace(f"/planted {needle}", "")
    assert sorted(p.name for p in outside.iterdir()) == ["planted"]
    assert (outside / "planted").read_text() == needle + "\n"


def _needle(outside: Path) -> str:
    return (outside / "planted").read_text().strip()


@pytest.mark.parametrize("isolation", ["rootless", "oci"])
def test_hostile_runs_hold_rootless(unprivileged_user, user_tmp, busybox_layout, hostile_bin, isolation):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    (user_tmp / "h").mkdir()
    ctx, outside, token = _setup(user_tmp / "h", hostile_bin, (u.uid, u.gid), with_bind=True)
    args = ["bud", "--isolation", isolation, "-t", "hostile", str(ctx)]
    r = u.bale(*args, root=root, env={"BALE_TEST_TOKEN": token, "CI_JOB_TOKEN": token}, check=False, timeout=600)
    _check(r, outside, _needle(outside), token, expect_held=14)
    out = user_tmp / "img"
    u.bale("push", "hostile", f"oci:{out}:latest", root=root)
    fs = flatten(read_layout(out, "latest")[2])
    assert "/link" in fs and not any("written" in p for p in fs), sorted(fs)
    assert "/c" not in fs and "/mnt/x" in fs


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot isolation is root's (CI runs as root)")
def test_hostile_runs_hold_in_chroot_isolation_as_root(tmp_path, busybox_layout, hostile_bin):
    from tests.fixtures.users import REPO
    (tmp_path / "h").mkdir()
    ctx, outside, token = _setup(tmp_path / "h", hostile_bin, None, with_bind=False)
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO), "BALE_TEST_TOKEN": token}

    def bale(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "builder.cli.main", "--root", str(store), *args],
                              capture_output=True, text=True, env=env, timeout=600)
    image_id = bale("pull", "-q", f"oci:{busybox_layout}:latest").stdout.strip()
    assert bale("tag", image_id, "busybox").returncode == 0
    r = bale("bud", "--isolation", "chroot", "-t", "hostile", str(ctx))
    _check(r, outside, _needle(outside), token, expect_held=12)
    assert "chroot isolation: the RUN gets no /proc and no /sys" in r.stderr
    out = tmp_path / "img"
    assert bale("push", "hostile", f"oci:{out}:latest").returncode == 0
    fs = flatten(read_layout(out, "latest")[2])
    assert "/link" in fs and not any("written" in p for p in fs)
    assert not [p for p in fs if p.startswith("/dev/")], sorted(p for p in fs if p.startswith("/dev"))
