"""Pod-like restrictions made on this host with a seccomp filter installed before bale starts
(seccomp_wrap.py), as the unprivileged user. A restricted pod (no_new_privs, no unshare, no mount:
what containerd's RuntimeDefault leaves a non-root process) builds with the ptrace isolation (proot
under Landlock, owners recorded): a Dockerfile whose RUN steps chown, chmod, write and delete gives
the digest of root's build on the host; where Landlock is missing as well it is refused before any
step with one line, and `bale info` names what is refused; a profile that refuses sethostname only
costs the hostname."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.pod_bale import bale_in_pod
from tests.helpers.root_build import layout_digest, root_build

pytestmark = [pytest.mark.slow]
EPOCH = "1700000000"
DOCKERFILE = """FROM busybox
RUN echo data > /data && chown 42:43 /data && mkdir -p /d/e && echo f > /d/e/f && chown -R 7:8 /d
RUN rm -rf /home && rm /data && echo again > /data2 && chmod 4755 /data2 && ln -s data2 /link
RUN echo x > /x && chmod 4755 /x && chown 5:6 /x && chown -h 9:9 /link && mkdir /e && chmod 0700 /e \\
    && chown 11:12 /e && touch /e/f && chown -R 13:12 /e && ls -ln / > /dev/null
"""


def _bale_under(mode: str, u, store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return bale_in_pod(mode, u, store, *args, epoch=EPOCH, timeout=300)


@pytest.fixture
def store(unprivileged_user, user_tmp, busybox_layout) -> Path:
    return unprivileged_user.busybox_store(user_tmp, busybox_layout)


def test_restricted_pod_builds_with_ptrace_isolation_and_root_s_digest(unprivileged_user, user_tmp, store,
                                                                      busybox_layout, tmp_path):
    """The issue's "Done when" for the restricted pod, on this host: uid 1000-style (no user namespace,
    no mount, no_new_privs), RUN steps that chown (files, a symlink with -h, recursively), chmod (set-uid
    cleared by a later chown, as the kernel does), write and delete give the digest of root's build."""
    u = unprivileged_user
    layout, _ = root_build(tmp_path / "root", busybox_layout, "busybox", DOCKERFILE, EPOCH, ref="t")
    reference = layout_digest(layout)
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    os.chown(ctx, u.uid, u.gid)
    os.chown(ctx / "Dockerfile", u.uid, u.gid)
    (store / "probe.json").unlink(missing_ok=True)
    info = _bale_under("restricted", u, store, "info")
    assert "isolation:       ptrace" in info.stdout, info.stdout + info.stderr
    r = _bale_under("restricted", u, store, "bud", "-t", f"oci:{user_tmp}/out:t", str(ctx))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "using ptrace isolation (proot under Landlock)" in r.stderr, r.stderr
    assert layout_digest(user_tmp / "out") == reference


def test_restricted_pod_without_landlock_is_refused_before_any_step(unprivileged_user, user_tmp, store):
    u = unprivileged_user
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo ran > /ran\n")
    os.chown(ctx, u.uid, u.gid)
    (store / "probe.json").unlink(missing_ok=True)
    r = _bale_under("restricted-no-landlock", u, store, "bud", "-t", "x", str(ctx))
    assert r.returncode == 2, r.stderr
    release = os.uname().release
    assert r.stderr.splitlines() == [
        f"bale: cannot build here as uid {u.uid}: user namespaces are refused (_try_mounts: unshare: Operation "
        "not permitted), chroot isolation needs root, and ptrace isolation is not available (Landlock ABI 0 "
        f"(kernel {release}): ABI 6 (Linux 6.12) with Landlock enabled is needed); run bale as root in this "
        "container, or allow user namespaces (a seccomp profile permitting unshare, or Unconfined)"], r.stderr
    info = _bale_under("restricted-no-landlock", u, store, "info")
    assert info.returncode == 0, info.stderr
    assert "isolation:       none" in info.stdout
    assert "refused:         user namespace (unshare(CLONE_NEWUSER): _try_mounts: unshare: Operation not " \
           "permitted) -> no RUN" in info.stdout
    assert "refused:         ptrace isolation (Landlock ABI 0" in info.stdout


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
