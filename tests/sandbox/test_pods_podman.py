"""bale inside containers made by rootful podman with runc, to the settings of
the Kubernetes recipes in examples/kubernetes/ (runtime-default-like.json holds
what RuntimeDefault refuses a container without CAP_SYS_ADMIN; PLATFORM.md §7):

* baseline: root, Docker/containerd's default capabilities, RuntimeDefault;
* user-namespaced (hostUsers: false): the same, as root of a user namespace
  mapping 0..65535 onto 300000..;
* restricted: uid 1001, every capability dropped, no_new_privs, RuntimeDefault.

Baseline and user-namespaced build a Dockerfile whose RUN steps chown, write
and delete, with the digest of the same build on the host (same
SOURCE_DATE_EPOCH), and hold the hostile RUN suite; restricted is refused
before any step, in one line. crun fails on this host's hybrid cgroups, and
root lacks CAP_SYS_RESOURCE, hence runc and the ulimits (PLATFORM.md)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sandbox.test_hostile_run import _check, _needle, _setup

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="rootful podman (CI runs as root)")]
HERE = Path(__file__).parent
PROFILE = HERE / "testdata" / "runtime-default-like.json"
EPOCH = "1700000000"
DOCKERFILE = """FROM busybox
RUN echo data > /data && chown 42:43 /data && mkdir -p /d/e && echo f > /d/e/f && chown -R 7:8 /d
RUN rm -rf /home && rm /data && echo again > /data2 && chmod 4755 /data2 && ln -s data2 /link
"""
USERNS_BASE = 300000

POD = {
    "baseline": {"user": None, "userns": False,
                 "flags": ["--cap-add", "MKNOD,NET_RAW,AUDIT_WRITE"]},
    "userns": {"user": None, "userns": True,
               "flags": ["--cap-add", "MKNOD,NET_RAW,AUDIT_WRITE",
                         "--uidmap", f"0:{USERNS_BASE}:65536", "--gidmap", f"0:{USERNS_BASE}:65536"]},
    "restricted": {"user": "1001:1001", "userns": False,
                   "flags": ["--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", "1001:1001"]},
}


def _rootfs(base: Path, owner: int) -> Path:
    """A minimal rootfs whose /usr, /etc, the venv and the checkout are bound read-only from the host."""
    root = base / "rootfs"
    if root.exists():  # a second container of the same test
        return root
    for d in ("usr", "etc", "opt/bale", "tmp", "proc", "sys", "dev", "run", "root", "work"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for name in ("bin", "lib", "lib64", "sbin"):
        os.symlink(f"usr/{name}", root / name)
    os.chmod(root / "tmp", 0o1777)
    for p in [root, *root.rglob("*")]:
        os.lchown(p, owner, owner)
    return root


def _podman(pod: str, base: Path, argv: list[str]) -> subprocess.CompletedProcess:
    from tests.fixtures.users import REPO
    spec = POD[pod]
    root = _rootfs(base / pod, USERNS_BASE if spec["userns"] else 0)
    venv = Path("/opt/bale/venv") if Path("/opt/bale/venv").is_dir() else Path(sys.prefix)
    cmd = ["podman", "--runtime", "runc", "run", "--rm", "--network", "none",
           "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
           "--security-opt", f"seccomp={PROFILE}", *spec["flags"],
           "-v", "/usr:/usr:ro", "-v", "/etc:/etc:ro", "-v", f"{venv}:{venv}:ro", "-v", f"{REPO}:{REPO}:ro",
           "-v", f"{base}:{base}", "-e", f"PYTHONPATH={REPO}", "-e", f"SOURCE_DATE_EPOCH={EPOCH}",
           "-e", "HOME=/tmp", "--workdir", "/tmp", "--rootfs", str(root), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def _bale_argv(store: Path, *args: str) -> list[str]:
    python = "/opt/bale/venv/bin/python" if os.path.exists("/opt/bale/venv/bin/python") else sys.executable
    return [python, "-m", "builder.cli.main", "--root", str(store), *args]


@pytest.fixture(scope="module")
def host_digest(tmp_path_factory, busybox_layout) -> str:
    """The test Dockerfile built on the host by root, as the reference."""
    from tests.fixtures.users import REPO
    base = tmp_path_factory.mktemp("host")
    ctx = base / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SOURCE_DATE_EPOCH": EPOCH}

    def bale(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(_bale_argv(base / "store", *args), capture_output=True, text=True, env=env,
                              timeout=600, cwd="/tmp")
    image = bale("pull", "-q", f"oci:{busybox_layout}:latest").stdout.strip()
    assert bale("tag", image, "busybox").returncode == 0
    r = bale("bud", "--digestfile", str(base / "digest"), "-t", "t", str(ctx))
    assert r.returncode == 0, r.stderr
    return (base / "digest").read_text().strip()


def _open_tree(base: Path, owner: int) -> None:
    """The pod's root (a mapped uid) must reach and write the shared test directory."""
    from tests.fixtures.users import make_traversable
    make_traversable(base)
    for p in [base, *base.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, os.stat(p).st_mode | 0o777)


@pytest.mark.parametrize("pod", ["baseline", "userns"])
def test_pod_builds_with_the_host_digest_and_holds_hostile_runs(pod, tmp_path, busybox_layout, host_digest,
                                                                hostile_bin):
    base = tmp_path / "pod"
    base.mkdir()
    ctx = base / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    lay = base / "layout"
    shutil.copytree(busybox_layout, lay)
    (base / "h").mkdir()
    hctx, outside, token = _setup(base / "h", hostile_bin, None, with_bind=False)
    _open_tree(base, 0)
    store = base / "store"
    script = " && ".join([
        " ".join(_bale_argv(store, "pull", "-q", f"oci:{lay}:latest")) + f" > {base}/id",
        " ".join(_bale_argv(store, "tag")) + f" $(cat {base}/id) busybox",
        " ".join(_bale_argv(store, "info")) + f" > {base}/info",
        " ".join(_bale_argv(store, "bud", "--digestfile", str(base / "digest"), "-t", "t", str(ctx))),
    ])
    r = _podman(pod, base, ["sh", "-c", script])
    assert r.returncode == 0, r.stdout + r.stderr
    info = (base / "info").read_text()
    assert "isolation:       chroot" in info, info
    assert (base / "digest").read_text().strip() == host_digest
    r = _podman(pod, base, ["env", f"BALE_TEST_TOKEN={token}",
                            *_bale_argv(store, "bud", "--isolation", "chroot", "-t", "hostile", str(hctx))])
    _check(r, outside, _needle(outside), token, expect_held=12)


@pytest.fixture(scope="module")
def hostile_bin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "hostile"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(HERE / "testdata" / "hostile.c")], check=True)
    return out


def test_restricted_pod_is_refused_in_one_line(tmp_path, busybox_layout):
    base = tmp_path / "pod"
    base.mkdir()
    ctx = base / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    _open_tree(base, 0)
    r = _podman("restricted", base, _bale_argv(base / "store", "bud", "-t", "t", str(ctx)))
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        "bale: cannot build here as uid 1001: user namespaces are refused (_try_mounts: unshare: Operation not "
        "permitted) and chroot isolation needs root; run bale as root in this container, or allow user namespaces "
        "(a seccomp profile permitting unshare, or Unconfined)"], r.stderr


def test_kubernetes_recipes_name_the_settings_tested_here():
    """examples/kubernetes/: each Job carries the settings its podman set-up above reproduces."""
    from tests.fixtures.users import REPO
    k8s = REPO / "examples" / "kubernetes"
    base, userns, restricted = ((k8s / f"{n}.yaml").read_text() for n in ("baseline", "userns", "restricted"))
    for text in (base, userns, restricted):
        assert "seccompProfile: {type: RuntimeDefault}" in text and "emptyDir" in text
        assert "secretName: registry-credentials" in text and '"bud", "--push"' in text
    assert "runAsUser: 0" in base and "hostUsers" not in base
    assert "hostUsers: false" in userns and "runAsUser: 0" in userns
    assert "runAsUser: 1000" in restricted and 'drop: ["ALL"]' in restricted
    assert "allowPrivilegeEscalation: false" in restricted
    assert POD["restricted"]["flags"] == ["--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user",
                                          "1001:1001"]
