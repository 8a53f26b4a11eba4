"""bale inside containers made by rootful podman with runc, to the security settings of the
Kubernetes Jobs in examples/kubernetes/ (read from the YAML, so recipes and tests cannot drift):

* baseline.yaml: root, containerd's default capabilities, RuntimeDefault;
* userns.yaml (hostUsers: false): the same, as root of a user namespace mapping 0..65535 onto 300000..;
* restricted.yaml: uid 100000, every capability dropped, no_new_privs (allowPrivilegeEscalation: false),
  RuntimeDefault.

RuntimeDefault is containerd's profile, generated from containerd's source into
testdata/seccomp/containerd-default.json (tests/sandbox/gen_containerd_seccomp.py); podman evaluates its
capability-conditional rules against the container's capabilities as containerd does. The capabilities
of a Job that drops none are containerd's defaults (pkg/oci/spec.go defaultUnixCaps). GitHub/GitLab
job containers (Docker, root, default capabilities and Docker's profile, which refuses the same calls)
are the baseline set-up.

Baseline, user-namespaced and restricted build a Dockerfile whose RUN steps chown, write and delete into
an OCI layout, with the manifest digest of the same build on the host (same SOURCE_DATE_EPOCH), and hold
the hostile RUN suite; restricted does it with the ptrace isolation (proot under Landlock, owners
recorded by bale: builder/sandbox/ptrace.py). crun fails on this host's hybrid
cgroups, and root lacks CAP_SYS_RESOURCE, hence runc and the ulimits (PLATFORM.md)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.root_build import layout_digest, root_build
from tests.sandbox.test_hostile_run import _check, _needle, _setup

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="rootful podman (CI runs as root)")]
HERE = Path(__file__).parent
REPO_ROOT = HERE.parent.parent
PROFILE = REPO_ROOT / "testdata" / "seccomp" / "containerd-default.json"
RECIPES = REPO_ROOT / "examples" / "kubernetes"
EPOCH = "1700000000"
DOCKERFILE = """FROM busybox
RUN echo data > /data && chown 42:43 /data && mkdir -p /d/e && echo f > /d/e/f && chown -R 7:8 /d
RUN rm -rf /home && rm /data && echo again > /data2 && chmod 4755 /data2 && ln -s data2 /link
"""
USERNS_BASE = 300000
#: containerd's capabilities for a container that asks for none (pkg/oci/spec.go defaultUnixCaps)
CONTAINERD_CAPS = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
                   "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"]


def recipe(name: str) -> dict[str, Any]:
    """The security settings of examples/kubernetes/NAME.yaml's Job: the pod's securityContext
    overlaid with the container's (as the kubelet does), plus hostUsers. PyYAML of Debian's python3
    reads the file (bale's venv carries no YAML parser)."""
    code = ("import json, sys, yaml; job = yaml.safe_load(open(sys.argv[1])); pod = job['spec']['template']['spec']; "
            "c = pod['containers'][0]; ctx = dict(pod.get('securityContext') or {}); "
            "ctx.update(c.get('securityContext') or {}); ctx['hostUsers'] = pod.get('hostUsers', True); "
            "ctx['args'] = c.get('args'); ctx['volumes'] = pod.get('volumes'); print(json.dumps(ctx))")
    out = subprocess.run(["/usr/bin/python3", "-c", code, str(RECIPES / f"{name}.yaml")], check=True,
                         capture_output=True, text=True)
    return dict(json.loads(out.stdout))


def podman_flags(ctx: dict[str, Any]) -> list[str]:
    """What containerd would give a container with securityContext ``ctx``, as podman flags."""
    seccomp = (ctx.get("seccompProfile") or {}).get("type", "Unconfined")
    flags = ["--security-opt", f"seccomp={PROFILE}" if seccomp == "RuntimeDefault" else "seccomp=unconfined"]
    caps = ctx.get("capabilities") or {}
    drop = [c.upper().removeprefix("CAP_") for c in caps.get("drop", [])]
    add = [c.upper().removeprefix("CAP_") for c in caps.get("add", [])]
    kept = [] if "ALL" in drop else [c for c in CONTAINERD_CAPS if c not in drop]
    flags += ["--cap-drop", "ALL"] + (["--cap-add", ",".join(kept + add)] if kept + add else [])
    if ctx.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    uid, gid = ctx.get("runAsUser", 0), ctx.get("runAsGroup", 0)
    if uid or gid:
        flags += ["--user", f"{uid}:{gid}"]
    if ctx.get("hostUsers") is False:
        flags += ["--uidmap", f"0:{USERNS_BASE}:65536", "--gidmap", f"0:{USERNS_BASE}:65536"]
    return flags


POD = {name: {"userns": recipe(name)["hostUsers"] is False, "flags": podman_flags(recipe(name))}
       for name in ("baseline", "userns", "restricted")}
#: CRI-O's RuntimeDefault is containers-common's profile (the one podman uses; Debian ships it here),
#: which permits unshare and mount: root there gets a user namespace over its own ids, not chroot
CRIO_PROFILE = Path("/usr/share/containers/seccomp.json")
POD["baseline-crio"] = {"userns": False, "flags": ["--security-opt", f"seccomp={CRIO_PROFILE}",
                                                   *POD["baseline"]["flags"][2:]]}
#: the isolation bale picks in each set-up (bale info), and what the hostile suite asks for
ISOLATION = {"baseline": ("chroot", "chroot"), "userns": ("chroot", "chroot"), "baseline-crio": ("rootless", None),
             "restricted": ("ptrace", "ptrace")}


def _rootfs(base: Path, owner: int) -> Path:
    """A minimal rootfs whose /usr, /etc, the venv and the checkout are bound read-only from the host
    (Debian's python, uidmap and busybox-static come with /usr). podman runs it as ``DIR:O``: an overlay,
    as a pod's root filesystem is; the store is a bind of a host directory, as an emptyDir is."""
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
           *spec["flags"],
           "-v", "/usr:/usr:ro", "-v", "/etc:/etc:ro", "-v", f"{venv}:{venv}:ro", "-v", f"{REPO}:{REPO}:ro",
           "-v", f"{base}:{base}", "-e", f"PYTHONPATH={REPO}", "-e", f"SOURCE_DATE_EPOCH={EPOCH}",
           "-e", "HOME=/tmp", "--workdir", "/tmp", "--rootfs", f"{root}:O", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def _bale_argv(store: Path, *args: str) -> list[str]:
    python = "/opt/bale/venv/bin/python" if os.path.exists("/opt/bale/venv/bin/python") else sys.executable
    return [python, "-m", "builder.cli.main", "--root", str(store), *args]


def _build_script(store: Path, lay: Path, base: Path, ctx: Path) -> str:
    """A shell line for the pod: pull ``lay``'s :latest into ``store`` and tag it busybox, write
    ``bale info`` to base/info, build ``ctx`` into the OCI layout base/out as :t."""
    return " && ".join([
        " ".join(_bale_argv(store, "pull", "-q", f"oci:{lay}:latest")) + f" > {base}/id",
        " ".join(_bale_argv(store, "tag")) + f" $(cat {base}/id) busybox",
        " ".join(_bale_argv(store, "info")) + f" > {base}/info",
        " ".join(_bale_argv(store, "bud", "-t", f"oci:{base}/out:t", str(ctx))),
    ])


def _host_build(base: Path, busybox_layout: Path, dockerfile: str) -> str:
    """``dockerfile`` built on the host by root into an OCI layout: its manifest digest, the reference."""
    layout, _ = root_build(base, busybox_layout, "busybox", dockerfile, EPOCH, ref="t", python=_bale_argv(base)[0])
    return layout_digest(layout)


@pytest.fixture(scope="module")
def host_digest(tmp_path_factory, busybox_layout) -> str:
    """The test Dockerfile built on the host by root, as the reference."""
    return _host_build(tmp_path_factory.mktemp("host"), busybox_layout, DOCKERFILE)


def _open_tree(base: Path, owner: int) -> None:
    """The pod's root (a mapped uid) must reach and write the shared test directory."""
    from tests.fixtures.users import make_traversable
    make_traversable(base)
    for p in [base, *base.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, os.stat(p).st_mode | 0o777)


@pytest.mark.parametrize("pod", ["baseline", "userns", "baseline-crio", "restricted"])
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
    r = _podman(pod, base, ["sh", "-c", _build_script(store, lay, base, ctx)])
    assert r.returncode == 0, r.stdout + r.stderr
    info = (base / "info").read_text()
    assert f"isolation:       {ISOLATION[pod][0]}" in info, info
    assert layout_digest(base / "out") == host_digest
    r = _podman(pod, base, ["env", f"BALE_TEST_TOKEN={token}",
                            *_bale_argv(store, "bud", *(["--isolation", ISOLATION[pod][1]] if ISOLATION[pod][1] else []),
                                        "-t", "hostile", str(hctx))])
    _check(r, outside, _needle(outside), token, expect_held=12)


@pytest.fixture(scope="module")
def hostile_bin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "hostile"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(HERE / "testdata" / "hostile.c")], check=True)
    return out


#: the restricted Job's settings under a profile permitting unshare (CRI-O's RuntimeDefault, as
#: examples/kubernetes/restricted.yaml suggests): newuidmap is refused (no_new_privs), a single-id mapping
POD["restricted-crio"] = {"userns": False, "flags": ["--security-opt", f"seccomp={CRIO_PROFILE}",
                                                     *POD["restricted"]["flags"][2:]]}
NO_CHOWN = """FROM busybox
RUN echo data > /data && mkdir -p /d/e && echo f > /d/e/f
RUN rm -rf /home && rm /data && echo again > /data2 && chmod 4755 /data2 && ln -s data2 /link
"""


def test_restricted_job_under_a_profile_allowing_unshare(tmp_path, busybox_layout):
    """What restricted.yaml's comment promises: with unshare permitted, a non-root uid without capabilities
    builds in a single-id user namespace (files its RUN makes are root's, the host digest), and a chown
    to another id fails in one line naming the step."""
    reference = _host_build(tmp_path / "host", busybox_layout, NO_CHOWN)
    base = tmp_path / "pod"
    base.mkdir()
    for name, text in (("ok", NO_CHOWN), ("chown", DOCKERFILE)):
        (base / name).mkdir()
        (base / name / "Dockerfile").write_text(text)
    lay = base / "layout"
    shutil.copytree(busybox_layout, lay)
    _open_tree(base, 0)
    store = base / "store"
    r = _podman("restricted-crio", base, ["sh", "-c", _build_script(store, lay, base, base / "ok")])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "isolation:       rootless" in (base / "info").read_text()
    assert "single-id mapping" in r.stderr, r.stderr
    assert layout_digest(base / "out") == reference
    r = _podman("restricted-crio", base, _bale_argv(store, "bud", "-t", "c", str(base / "chown")))
    assert r.returncode == 1, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("bale: ") and "WARNING" not in line]
    assert len(errors) == 1 and "Dockerfile:2" in errors[0], r.stderr


def test_kubernetes_recipes_are_the_podman_set_ups():
    """examples/kubernetes/: each Job's securityContext becomes the podman flags above (RuntimeDefault
    -> containerd's profile), and each pushes with registry credentials from a Secret to an emptyDir store."""
    profile = ["--security-opt", f"seccomp={PROFILE}"]
    default_caps = ["--cap-drop", "ALL", "--cap-add", ",".join(CONTAINERD_CAPS)]
    assert POD["baseline"]["flags"] == profile + default_caps
    assert POD["userns"]["flags"] == profile + default_caps + [
        "--uidmap", f"0:{USERNS_BASE}:65536", "--gidmap", f"0:{USERNS_BASE}:65536"]
    assert POD["restricted"]["flags"] == profile + ["--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                                                    "--user", "100000:100000"]
    for name in ("baseline", "userns", "restricted"):
        ctx = recipe(name)
        assert ctx["args"][:3] == ["--root", "/store", "bud"] and "--push" in ctx["args"], ctx["args"]
        volumes = {v["name"]: v for v in ctx["volumes"]}
        assert volumes["store"] == {"name": "store", "emptyDir": {}}
        assert volumes["auth"]["secret"]["secretName"] == "registry-credentials"


def test_containerd_profile_is_containerd_s_rules():
    """testdata/seccomp/containerd-default.json: what DefaultProfile gives amd64 (containerd
    contrib/seccomp/seccomp_default.go): default EPERM, namespaces and mounts only with CAP_SYS_ADMIN,
    clone without namespace flags otherwise, clone3 ENOSYS, chroot only with CAP_SYS_CHROOT."""
    prof = json.loads(PROFILE.read_text())
    assert "containerd/containerd contrib/seccomp/seccomp_default.go at commit " in prof["comment"]
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO" and prof["defaultErrnoRet"] == 1
    assert prof["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    rules = prof["syscalls"]
    allowed = set(rules[0]["names"])
    assert {"read", "chown", "fchownat", "setresuid", "arch_prctl"} - allowed == {"arch_prctl"}
    assert not {"unshare", "mount", "setns", "chroot", "clone", "clone3", "ptrace", "sethostname"} & allowed
    by = {(tuple(r["names"]), json.dumps(r.get("includes") or r.get("excludes"))): r for r in rules}
    admin = next(r for r in rules if r.get("includes") == {"caps": ["CAP_SYS_ADMIN"]})
    assert {"unshare", "mount", "setns", "fsopen", "sethostname", "clone", "clone3"} <= set(admin["names"])
    assert by[(("chroot",), json.dumps({"caps": ["CAP_SYS_CHROOT"]}))]["action"] == "SCMP_ACT_ALLOW"
    clone = by[(("clone",), json.dumps({"caps": ["CAP_SYS_ADMIN"]}))]
    assert clone["excludes"] == {"caps": ["CAP_SYS_ADMIN"]}
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    clone3 = by[(("clone3",), json.dumps({"caps": ["CAP_SYS_ADMIN"]}))]
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)
    ptrace = by[(("process_vm_readv", "process_vm_writev", "ptrace"), json.dumps({"minKernel": "4.8"}))]
    assert ptrace["action"] == "SCMP_ACT_ALLOW"
