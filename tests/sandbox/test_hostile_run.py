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
RUN if [ -e /proc/self/status ]; then echo proc=own; elif [ -e /proc/cpuinfo ]; then echo proc=minimal; \
    else echo proc=none; fi
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


#: how bale is started in each set-up: (user, command prefix outside runuser, prefix inside, bud isolation)
MASK_PROC = ["unshare", "-m", "sh", "-c", 'mount --bind /dev/null /proc/keys && exec "$@"', "sh"]
NO_SYS_ADMIN = ["capsh", "--drop=cap_sys_admin", "--", "-c", 'exec "$@"', "sh"]
SETUPS = {
    "rootless": ("baletest", [], [], None),
    "oci-runc": ("baletest", [], [], "oci"),
    # a container's /proc (over-mounted paths): no fresh procfs, RUN must not get the outer one
    "rootless-masked-proc": ("baletest", MASK_PROC, [], None),
    # no_new_privs (a pod's allowPrivilegeEscalation: false): newuidmap refused, single-id mapping
    "rootless-no-new-privs": ("baletest", [], ["setpriv", "--no-new-privs"], None),
    # BUILDAH_ISOLATION=chroot as a non-root user: the strongest isolation that works is used
    "chroot-requested-as-user": ("baletest", [], [], "chroot"),
    "chroot-as-root": ("root", [], [], "chroot"),
    # root without CAP_SYS_ADMIN (a pod's root): a user namespace over its own ids before chroot
    "root-without-sys-admin": ("root", NO_SYS_ADMIN, [], None),
    # the restricted pod's isolation (proot under Landlock, owners recorded), forced on the host
    "ptrace": ("baletest", [], [], "ptrace"),
}


def _runner(setup: str, u, store: Path, env: dict[str, str]):
    who, outer, inner, _ = SETUPS[setup]

    def bale(*args: str) -> subprocess.CompletedProcess:
        cmd = [u.python if who != "root" else sys.executable, "-m", "builder.cli.main", "--root", str(store), *args]
        if who == "root":
            full = [*outer, "env", *[f"{k}={v}" for k, v in env.items()], *cmd]
        else:
            full = [*outer, "runuser", "-u", u.name, "--", *inner, "env", "-i",
                    *[f"{k}={v}" for k, v in u.env(env).items()], *cmd]
        return subprocess.run(full, capture_output=True, text=True, timeout=600, cwd="/tmp")
    return bale


@pytest.mark.parametrize("setup", list(SETUPS))
def test_hostile_runs_hold(setup, unprivileged_user, user_tmp, busybox_layout, hostile_bin):
    from tests.fixtures.users import REPO
    u = unprivileged_user
    who, _, _, isolation = SETUPS[setup]
    if who == "root" and os.geteuid() != 0:
        pytest.skip("root set-ups need root (CI runs as root)")
    base = user_tmp / "h"
    base.mkdir()
    ctx, outside, token = _setup(base, hostile_bin, (u.uid, u.gid) if who != "root" else None,
                                 with_bind=not (isolation == "chroot" and who == "root") and isolation != "ptrace")
    env = {"BALE_TEST_TOKEN": token, "CI_JOB_TOKEN": token}
    if who == "root":
        env.update({"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "HOME": os.environ.get("HOME", "/root"), "TMPDIR": str(base)})
    store = base / "store"
    bale = _runner(setup, u, store, env)
    lay = base / "layout"
    shutil.copytree(busybox_layout, lay)
    if who != "root":
        for p in [lay, *lay.rglob("*")]:
            os.lchown(p, u.uid, u.gid)
    r = bale("pull", "-q", f"oci:{lay}:latest")
    assert r.returncode == 0, r.stderr
    assert bale("tag", r.stdout.strip(), "busybox").returncode == 0
    info = bale("info").stdout
    r = bale("bud", *(["--isolation", isolation] if isolation else []), "-t", "hostile", str(ctx))
    _check(r, outside, _needle(outside), token, expect_held=12)
    lines = r.stdout.splitlines() + r.stderr.splitlines()
    if setup == "rootless-masked-proc":
        assert "proc=minimal" in lines and "fresh /proc:     no" in info, r.stdout
        assert any("no fresh /proc can be mounted here" in l for l in lines)
    elif setup == "ptrace":
        assert "proc=minimal" in lines, r.stdout
        assert any("ptrace isolation: RUN runs under proot inside a Landlock domain" in l for l in lines), r.stderr
    elif setup == "chroot-as-root":
        assert "proc=none" in lines and any("the RUN gets no /proc" in l for l in lines)
    else:
        assert "proc=own" in lines, r.stdout
    if setup == "rootless-no-new-privs":
        assert any("newuidmap failed" in l and "single-id mapping" in l for l in lines), r.stderr
    if setup == "chroot-requested-as-user":
        assert any("the strongest isolation that works here is used: rootless" in l for l in lines), r.stderr
    if setup == "root-without-sys-admin":
        assert "isolation:       rootless" in info and "a user namespace mapping 0..65535 onto itself" in info, info
    out = base / "img"
    assert bale("push", "hostile", f"oci:{out}:latest").returncode == 0
    fs = flatten(read_layout(out, "latest")[2])
    assert "/link" in fs and not any("written" in p for p in fs), sorted(fs)
    assert "/c" not in fs and not [p for p in fs if p.startswith(("/dev/", "/proc/", "/run/"))], sorted(fs)


@pytest.mark.parametrize("setup", ["rootless", "ptrace", "chroot-as-root"])
def test_a_run_making_bale_its_tracer_ends_cleanly(setup, unprivileged_user, user_tmp, tmp_path):
    """A RUN's first process is a child of bale's code (the namespace worker's PID 1 fork, proot's
    launcher, chroot's fork): PTRACE_TRACEME makes bale its tracer, and each signal it then gets stops
    it for bale's wait. Such a stop is handed back (the signal delivered, the process untraced): the
    build goes on; was 'RUN: ValueError: process stopped by delivery of signal 10' rootless. In
    chroot isolation the filter refuses ptrace (traceme=-1); under ptrace isolation proot emulates it
    (the stops are proot's). oci is not tried: runc's wait does not
    see stops, so the RUN stays stopped, as one that never ends (kill it with SIGTERM)."""
    from tests.fixtures.users import REPO
    u = unprivileged_user
    who = SETUPS[setup][0]
    base = user_tmp / "t"
    base.mkdir()
    ctx = base / "ctx"
    ctx.mkdir()
    subprocess.run(["gcc", "-static", "-O1", "-o", str(ctx / "traceme"), str(HERE / "testdata" / "traceme.c")],
                   check=True)
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY traceme /traceme\nRUN ["/traceme"]\nRUN ["/traceme"]\n')
    for p in [base, ctx, *ctx.iterdir()]:
        os.chmod(p, p.stat().st_mode | 0o755)
        if who != "root":
            os.lchown(p, u.uid, u.gid)
    env = {}
    if who == "root":
        env = {"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "HOME": os.environ.get("HOME", "/root"), "TMPDIR": str(base)}
    bale = _runner(setup, u, base / "store", env)
    isolation = SETUPS[setup][3]
    r = bale("bud", *(["--isolation", isolation] if isolation else []), "-t", "traced", str(ctx))
    assert "Error" not in r.stderr and "internal" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    if setup == "ptrace":  # proot 5.1 emulates ptrace for the RUN (its TRACEME is proot's): it ends, in one line
        assert r.returncode == 0 or r.stderr.splitlines()[-1].startswith("bale: Dockerfile:3: RUN: /traceme: exited"), \
            r.stderr
        return
    assert r.returncode == 0, r.stdout + r.stderr
    expect = "traceme=-1" if setup == "chroot-as-root" else "traceme=0"
    assert r.stdout.splitlines().count(expect) == 2 and r.stdout.splitlines().count("handled") == 2, r.stdout
