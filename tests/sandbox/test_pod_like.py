"""Pod-like restrictions made on this host with a seccomp filter installed before bale starts
(seccomp_wrap.py), as the unprivileged user: a restricted pod (no_new_privs, no unshare, no mount:
what containerd's RuntimeDefault leaves a non-root process) is refused before any step with one line,
and `bale info` names what is refused; a profile that refuses sethostname only costs the hostname."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]
WRAP = Path(__file__).with_name("seccomp_wrap.py")


def _bale_under(mode: str, u, store: Path, *args: str) -> subprocess.CompletedProcess:
    from tests.fixtures.users import REPO
    cmd = ["runuser", "-u", u.name, "--", "env", "-i", *[f"{k}={v}" for k, v in u.env().items()],
           u.python, "-m", "builder.cli.main", "--root", str(store), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(WRAP), mode, *cmd], capture_output=True, text=True, env=env,
                          timeout=300, cwd="/tmp")


@pytest.fixture
def store(unprivileged_user, user_tmp, busybox_layout) -> Path:
    return unprivileged_user.busybox_store(user_tmp, busybox_layout)


def test_restricted_pod_is_refused_before_any_step(unprivileged_user, user_tmp, store):
    u = unprivileged_user
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo ran > /ran\n")
    os.chown(ctx, u.uid, u.gid)
    (store / "probe.json").unlink(missing_ok=True)
    r = _bale_under("restricted", u, store, "bud", "-t", "x", str(ctx))
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        f"bale: cannot build here as uid {u.uid}: user namespaces are refused (_try_mounts: unshare: Operation "
        "not permitted) and chroot isolation needs root; run bale as root in this container, or allow user "
        "namespaces (a seccomp profile permitting unshare, or Unconfined)"], r.stderr
    info = _bale_under("restricted", u, store, "info")
    assert info.returncode == 0, info.stderr
    assert "isolation:       none" in info.stdout
    assert "refused:         user namespace (unshare(CLONE_NEWUSER): _try_mounts: unshare: Operation not " \
           "permitted)" in info.stdout


def test_sethostname_refused_keeps_the_outer_hostname(unprivileged_user, user_tmp, store):
    u = unprivileged_user
    name = u.bale("from", "busybox", root=store).stdout.strip()
    (store / "probe.json").unlink()  # probed again under the filter
    r = _bale_under("no-sethostname", u, store, "run", "--hostname", "inside", name, "--", "hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == os.uname().nodename
    notes = [l for l in r.stderr.splitlines() if "sethostname is refused here" in l]
    assert len(notes) == 1, r.stderr
    info = _bale_under("no-sethostname", u, store, "info").stdout
    assert "refused:         hostname (sethostname: Operation not permitted) -> the outer hostname is kept" in info
