"""RUN mounts never touch host data, secrets never reach disk or a layer, a RUN
leaves nothing in $TMPDIR, and signals end a build cleanly — as the
unprivileged user, through `bale bud`.

Spec: BuildKit gives an ``rw`` bind a writable view whose writes are discarded
(moby/buildkit solver/llbsolver/mounts: bind mounts from a snapshot are made
``readonly`` or mounted from a mutable copy that is released after the exec,
frontend/dockerfile/docs/reference.md "RUN --mount=type=bind": "rw: Allow
writes on the mount. Written data will be discarded"); secrets are tmpfs-backed
files (buildkit solver/llbsolver/mounts/mount.go secretMountInstance: a tmpfs
mounted with the secret file, never in the snapshot)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.oci_reader import flatten, read_layout
from tests.helpers.processes import running, wait_started
from tests.helpers.secret_scan import scan_for
from tests.helpers.user_context import tree_view, user_context

pytestmark = [pytest.mark.slow]


@pytest.fixture
def env(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    tmpdir = user_tmp / "tmpdir"
    tmpdir.mkdir()
    os.chown(tmpdir, u.uid, u.gid)

    def bale(*args, **kw):
        extra = kw.pop("env", {})
        return u.bale(*args, root=root, env={"TMPDIR": str(tmpdir), **extra}, **kw)
    return u, bale, user_tmp, tmpdir


def _image_fs(bale, tmp: Path, name: str) -> dict:
    out = tmp / f"oci-{name}"
    bale("push", name, f"oci:{out}:latest")
    _, _, layers = read_layout(out, "latest")
    return flatten(layers)


def test_rw_binds_never_write_host_data_or_another_stage(env):
    u, bale, tmp, _ = env
    other = tmp / "other-ctx"
    other.mkdir()
    (other / "o.txt").write_text("other\n")
    for p in (other, other / "o.txt"):
        os.lchown(p, u.uid, u.gid)
    ctx = user_context(u, tmp, "ctx", """FROM busybox AS first
RUN echo keep > /keep.txt
FROM busybox
RUN --mount=type=bind,rw,target=/c rm /c/important.txt && echo new > /c/new && echo seen > /c/sub/x \\
    && test ! -e /c/important.txt
RUN --mount=type=bind,rw,target=/c test -e /c/important.txt && test ! -e /c/new
RUN --mount=type=bind,from=other,rw,target=/o rm /o/o.txt && echo z > /o/z
RUN --mount=type=bind,from=first,rw,target=/f rm /f/keep.txt && echo bad > /f/bad
COPY --from=first /keep.txt /copied-keep.txt
""", {"important.txt": "precious\n", "sub/x": "x\n"})
    before, before_other = tree_view(ctx), tree_view(other)
    r = bale("bud", "--build-context", f"other={other}", "-t", "rwb", str(ctx), check=False)
    assert r.returncode == 0, r.stderr
    assert tree_view(ctx) == before and tree_view(other) == before_other
    fs = _image_fs(bale, tmp, "rwb")
    assert fs["/copied-keep.txt"].content == b"keep\n"
    assert not [p for p in fs if p in ("/c", "/o", "/f") or p.startswith(("/c/", "/o/", "/f/"))], sorted(fs)


def test_onbuild_rw_bind_of_a_base_image_cannot_touch_the_context(env):
    u, bale, tmp, _ = env
    base = user_context(u, tmp, "base", "FROM busybox\nONBUILD RUN --mount=type=bind,rw,target=/c rm -f /c/important.txt\n")
    assert bale("bud", "-t", "evilbase", str(base), check=False).returncode == 0
    ctx = user_context(u, tmp, "ctx2", "FROM evilbase\nRUN true\n", {"important.txt": "precious\n"})
    r = bale("bud", "-t", "victim", str(ctx), check=False)
    assert r.returncode == 0, r.stderr
    assert (ctx / "important.txt").read_text() == "precious\n"


def test_cache_mounts_stay_shared(env):
    u, bale, tmp, _ = env
    ctx = user_context(u, tmp, "ctx", "FROM busybox\nRUN --mount=type=cache,target=/cache echo 1 >> /cache/n\n"
                              "RUN --mount=type=cache,target=/cache test \"$(cat /cache/n)\" = 1\n")
    r = bale("bud", "-t", "cm", str(ctx), check=False)
    assert r.returncode == 0, r.stderr


def test_secrets_live_in_memory_and_leave_nothing_in_layers(env):
    u, bale, tmp, tmpdir = env
    secret = b"S3CRET-" + os.urandom(8).hex().encode()
    src = tmp / "secret.txt"
    src.write_bytes(secret)
    os.chown(src, u.uid, u.gid)
    ctx = user_context(u, tmp, "ctx", """FROM busybox
RUN --mount=type=secret,id=tok cat /run/secrets/tok > /dev/null
RUN --mount=type=secret,id=tok,target=/etc/deep/tok,mode=0440,uid=5 \\
    test "$(stat -c %a:%u /etc/deep/tok)" = 440:5 && ! (echo x > /etc/deep/tok) 2>/dev/null
RUN --mount=type=secret,id=tok sh -c 'grep -q S3CRET /run/secrets/tok && sleep 3'
RUN echo after > /after
""")
    proc = subprocess.Popen(u.bale_argv("bud", "--secret", f"id=tok,src={src}", "-t", "sec", str(ctx),
                                        root=tmp / "store", env={"TMPDIR": str(tmpdir)}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    during: list[str] = []
    while proc.poll() is None:  # while the build runs: the secret is nowhere on disk but its source
        during += scan_for(secret, tmpdir, tmp / "store")
        time.sleep(0.2)
    assert proc.returncode == 0, proc.stderr
    assert during == [] and scan_for(secret, tmpdir, tmp / "store") == []
    assert list(tmpdir.iterdir()) == []
    fs = _image_fs(bale, tmp, "sec")
    assert fs["/after"].content == b"after\n"
    assert not [p for p in fs if p.startswith(("/run", "/etc/deep"))], sorted(fs)


def test_twenty_runs_leave_tmpdir_as_it_was(env):
    u, bale, tmp, tmpdir = env
    runs = "".join(f"RUN --mount=type=bind,rw,target=/c echo {i} > /c/f{i} && echo {i} > /r{i}\n" for i in range(20))
    ctx = user_context(u, tmp, "ctx", "FROM busybox\n" + runs)
    before = sorted(os.listdir(tmpdir))
    r = bale("bud", "-t", "twenty", str(ctx), check=False)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmpdir)) == before == []


def _bale_pid(parent: int) -> int:
    for _ in range(100):
        kids = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    raise AssertionError("bale did not start")


def _wait_gone(pattern: str, timeout: float = 15) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if not running(pattern):
            return True
        time.sleep(0.1)
    return False


def _start_bud(u, store: Path, ctx: Path, tmpdir: Path) -> subprocess.Popen:
    argv = u.bale_argv("bud", "-t", "never", str(ctx), root=store, env={"TMPDIR": str(tmpdir)})
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("isolation", ["rootless", "oci"])
def test_killing_bale_kills_a_run_as_another_user(env, isolation):
    """setresuid clears the parent-death signal: the sandbox sets it again after the switch. The
    secret the RUN has mounted was only ever in memory: after kill -9 it is nowhere on disk."""
    u, bale, tmp, tmpdir = env
    secret = b"KILLED-" + os.urandom(8).hex().encode()
    src = tmp / "secret.txt"
    src.write_bytes(secret)
    os.chown(src, u.uid, u.gid)
    marker = {"rootless": 4646, "oci": 4647}[isolation]  # the cases may run at once
    ctx = user_context(u, tmp, "ctx", f"FROM busybox\nUSER 1000:1000\nRUN --mount=type=secret,id=k,uid=1000 sleep {marker}\n")
    argv = u.bale_argv("bud", "--isolation", isolation, "--secret", f"id=k,src={src}", "-t", "never", str(ctx),
                       root=tmp / "store", env={"TMPDIR": str(tmpdir)})
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = _bale_pid(proc.pid)
    wait_started(proc, f"^sleep {marker}", "the RUN")
    assert scan_for(secret, tmpdir, tmp / "store") == []
    os.kill(pid, signal.SIGKILL)
    proc.wait(20)
    assert _wait_gone(f"^sleep {marker}"), "the RUN outlived bale"
    with open("/proc/self/mountinfo") as fh:
        assert str(tmp / "store") not in fh.read()
    assert scan_for(secret, tmpdir, tmp / "store") == [] and list(tmpdir.iterdir()) == []


@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP"),
                                           (signal.SIGINT, 130, "interrupted")])
def test_signals_stop_the_run_and_exit_with_one_line(env, sig, code, word):
    u, bale, tmp, tmpdir = env
    marker = 4700 + int(sig)  # one per case: cases may run at once
    ctx = user_context(u, tmp, "ctx", f"FROM busybox\nRUN --mount=type=secret,id=s sleep {marker}\n")
    src = tmp / "s.txt"
    src.write_text("x")
    os.chown(src, u.uid, u.gid)
    argv = u.bale_argv("bud", "--secret", f"id=s,src={src}", "-t", "never", str(ctx), root=tmp / "store",
                       env={"TMPDIR": str(tmpdir)})
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = _bale_pid(proc.pid)
    wait_started(proc, f"^sleep {marker}", "the RUN")
    os.kill(pid, sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    last = [l for l in err.splitlines() if l.startswith("bale:")]
    assert len(last) == 1 and word in last[0] and "Traceback" not in err, err
    assert _wait_gone(f"^sleep {marker}")
    assert list(tmpdir.iterdir()) == []
    with open("/proc/self/mountinfo") as fh:
        assert str(tmp / "store") not in fh.read()
    # the build's working snapshot is removed on the way out, not left for a later prune
    assert list((tmp / "store" / "snapshots").glob("*/containers/*")) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot isolation is root's (CI runs as root)")
def test_killing_bale_kills_a_chroot_run_as_another_user(tmp_path, busybox_layout):
    """chroot isolation: the RUN's parent-death signal is set again after setresuid too."""
    import sys
    from tests.fixtures.users import REPO
    store = tmp_path / "store"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nUSER 1000:1000\nRUN sleep 4649\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    base = [sys.executable, "-m", "builder.cli.main", "--root", str(store)]
    image = subprocess.run([*base, "pull", "-q", f"oci:{busybox_layout}:latest"], capture_output=True, text=True,
                           env=env, check=True).stdout.strip()
    subprocess.run([*base, "tag", image, "busybox"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([*base, "bud", "--isolation", "chroot", "-t", "never", str(ctx)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_started(proc, "^sleep 4649", "the RUN")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(20)
    assert _wait_gone("^sleep 4649"), "the RUN outlived bale"


def test_bale_is_not_dumpable_while_a_run_runs(env):
    """Even a process with bale's uid that could see bale's processes (a RUN where the outer /proc
    leaked, or anything else of the user's) can neither read their environment nor open their fds."""
    u, bale, tmp, tmpdir = env
    ctx = user_context(u, tmp, "ctx", "FROM busybox\nRUN sleep 4650\n")
    proc = _start_bud(u, tmp / "store", ctx, tmpdir)
    main = _bale_pid(proc.pid)
    try:
        wait_started(proc, "^sleep 4650", "the RUN")
        helpers = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True).stdout.split()
        assert helpers, "no namespace child"
        for pid in [main, *map(int, helpers)]:
            for what in (f"/proc/{pid}/environ", f"/proc/{pid}/fd/0", f"/proc/{pid}/mem"):
                r = u.run(["cat", what], check=False, timeout=10)
                assert r.returncode != 0 and "Permission denied" in r.stderr, (what, r.stdout[:100], r.stderr)
            r = u.run(["ls", f"/proc/{pid}/fd"], check=False, timeout=10)
            assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
    finally:
        os.kill(main, signal.SIGTERM)
        proc.communicate(timeout=30)
    assert _wait_gone("^sleep 4650")
