"""``--isolation oci``: write an OCI runtime-spec bundle (config.json with the
snapshot as root) and hand it to runc, crun, or the runtime named by
``--runtime`` (the ``runtime`` argument of run_oci). Rootless, the bundle is made and run inside
bale's user namespace (where the snapshot is mounted), so the runtime sees
itself in a user namespace and manages no cgroups."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from builder.errors import SandboxError
from builder.sandbox import kernel
from builder.sandbox.binds import PIPES, Stage, materialize
from builder.sandbox.process import ETC_FILES, MOUNT_DIRS, _make_point, _resolv_conf
from builder.sandbox.seccomp import oci_profile
from builder.sandbox.spec import BindSpec, ProcessSpec, RunResult
from builder.sandbox.userns import UserNamespace
from builder.sandbox.users import resolve_user
from snapshotter import syscalls as sc
from snapshotter.drivers import in_initial_userns


def find_runtime(name: str | None = None) -> str:
    """The OCI runtime's path: ``name`` (a command or a path) if given, else runc, else crun.
    Raises SandboxError when none is executable."""
    if name:
        path = shutil.which(name) if not os.path.isabs(name) else name
        if path and os.access(path, os.X_OK):
            return path
        raise SandboxError(f"--runtime {name}: not found or not executable")
    for cand in ("runc", "crun"):
        path = shutil.which(cand)
        if path and os.access(path, os.X_OK):
            return path
    raise SandboxError("--isolation oci: no OCI runtime found (install runc or crun, or pass --runtime)")


def bundle_config(spec: ProcessSpec, root: Path, user: tuple[int, int, list[int], str], etc: dict[str, Path],
                  binds: list[Any]) -> dict[str, Any]:
    uid, gid, groups, home = user
    env = list(spec.env)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={home or '/'}")
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755",
                                                                               "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev",
                                                                                 "mode=1777", "size=65536k"]},
        {"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev",
                                                                             "ro"]},
    ]
    for dest, src in etc.items():
        mounts.append({"destination": dest, "type": "bind", "source": str(src), "options": ["bind", "ro"]})
    for m in binds:
        if m.type == "tmpfs":
            mounts.append({"destination": m.dest, "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]})
        else:
            mounts.append({"destination": m.dest, "type": "bind", "source": m.host_source(),
                           "options": ["rbind"] + (["ro"] if m.readonly or not m.shared else [])})
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if spec.network == "none":
        namespaces.append({"type": "network"})
    return {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": uid, "gid": gid, "additionalGids": groups},
                    "args": spec.args, "env": env, "cwd": spec.cwd or "/",
                    "capabilities": {k: _CAPS for k in ("bounding", "effective", "permitted")},
                    "noNewPrivileges": False},
        "root": {"path": str(root), "readonly": False},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {"namespaces": namespaces, "seccomp": oci_profile(),
                  "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
                  "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"]},
    }


_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
         "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_SETFCAP", "CAP_AUDIT_WRITE", "CAP_MKNOD",
         "CAP_NET_RAW"]


def _die_with_parent() -> None:
    kernel.set_pdeathsig()


def _runc_pid1() -> None:
    """In runc's process before exec: PID 1 of a new pid namespace, given a /proc of it."""
    _die_with_parent()
    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    sc.mount("proc", "/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)


def _run_in_ns(spec: ProcessSpec, rootfs: Any, full_mapping: bool, runtime: str, tmp_root: str | None = None,
               own_pidns: bool = False) -> RunResult:
    root = Path(rootfs.setup())
    created: list[str] = []
    bundle = Path(tempfile.mkdtemp(prefix="bale-bundle-", dir=tmp_root))
    mem = bundle / "mem"
    mem.mkdir()
    stage = None
    try:
        for d in MOUNT_DIRS:
            _make_point(root, d, True, created)
        for f in ETC_FILES:
            _make_point(root, f, False, created)
        for m in spec.mounts:
            _make_point(root, m.dest, m.type == "tmpfs" or (m.type == "bind" and os.path.isdir(m.host_source())),
                        created)
        user = resolve_user(root, spec.user)
        # memory for secrets, /etc files and copy-on-write uppers: nothing of them on disk
        sc.mount("tmpfs", str(mem), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0700")
        stage = Stage(str(mem))
        os.chmod(stage.dir, 0o755)  # runc (in this namespace) resolves bind sources through it
        etc = {
            "/etc/hosts": stage.file(f"127.0.0.1\tlocalhost\n127.0.1.1\t{spec.hostname}\n".encode()),
            "/etc/hostname": stage.file((spec.hostname + "\n").encode()),
            "/etc/resolv.conf": stage.file(_resolv_conf(spec.network).encode()),
        }
        binds = materialize(stage, spec.mounts, not in_initial_userns())
        if spec.pipes:  # after /dev's tmpfs in the spec: runc makes the point there, never in the rootfs
            binds.append(BindSpec(str(stage.pipes_dir(spec.pipes)), PIPES, readonly=True))
        (bundle / "config.json").write_text(json.dumps(bundle_config(spec, root, user, etc, binds)))
        state = bundle / "state"
        state.mkdir()
        stdin = subprocess.DEVNULL if spec.stdin_data == b"" else None
        name = "bale-" + os.urandom(6).hex()
        if own_pidns:
            # runc becomes PID 1 of a pid namespace of its own (with its own /proc): when it dies (with
            # us, by its parent-death signal) every process of the container dies with it
            sc.unshare(sc.CLONE_NEWPID)
        proc = subprocess.run([runtime, "--root", str(state), "run", "--bundle", str(bundle), name],
                              stdin=stdin if spec.stdin_data in (b"", None) else subprocess.PIPE,
                              input=spec.stdin_data if spec.stdin_data else None,
                              preexec_fn=_runc_pid1 if own_pidns else _die_with_parent)
        code = proc.returncode
    finally:
        if os.path.ismount(mem):  # detaches the stage's overlays and tmpfs with it
            sc.umount(str(mem), sc.MNT_DETACH)
        shutil.rmtree(bundle, ignore_errors=True)
    return RunResult(128 - code if code < 0 else code, created)


def _run_in_ns_plain(spec: ProcessSpec, rootfs: Any, full_mapping: bool, runtime: str,
                     tmp_root: str | None, own_pidns: bool) -> dict[str, object]:
    return _run_in_ns(spec, rootfs, full_mapping, runtime, tmp_root, own_pidns).to_plain()


def run_oci(spec: ProcessSpec, rootfs: Any, userns: Any = None, runtime: str | None = None,
            tmp_root: str | None = None, own_pidns: bool = False) -> RunResult:
    """Run ``spec`` with the OCI runtime ``runtime`` (see find_runtime) in ``userns``; the bundle is
    made under ``tmp_root`` (the store's per-process temp dir, swept after a kill), else $TMPDIR.
    ``own_pidns`` (where a fresh /proc can be mounted): runc runs as PID 1 of its own pid namespace,
    so a killed bale takes the container with it."""
    path = find_runtime(runtime)
    ns = userns or UserNamespace()
    with kernel.undumpable():
        return RunResult.from_plain(ns.call(_run_in_ns_plain, spec, rootfs, ns.full_mapping, path, tmp_root,
                                            own_pidns))
