"""``--isolation chroot``: for a process that is root inside a container that
may create neither user namespaces nor mounts (Docker's and Kubernetes'
RuntimeDefault seccomp). The rootfs is a plain directory (native driver); the
command runs chrooted in it as the image's user. No /proc or /dev is mounted;
the pod is the security boundary, as with buildah's chroot isolation."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from builder.errors import ContainerError, SandboxError
from builder.sandbox.spec import ProcessSpec, RunResult
from snapshotter import syscalls as sc


def run_chroot(spec: ProcessSpec, rootfs: Any) -> RunResult:
    from builder.sandbox.users import resolve_user
    if os.geteuid() != 0:
        raise SandboxError("chroot isolation needs root (inside its container)")
    root = Path(rootfs.setup())
    uid, gid, groups, home = resolve_user(root, spec.user)
    if spec.mounts:
        raise SandboxError("RUN mounts need mount namespaces, which chroot isolation does not have")
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    stdin_r = stdin_w = None
    if spec.stdin_data:
        stdin_r, stdin_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(err_r)
            sc.set_pdeathsig(signal.SIGKILL)
            if stdin_r is not None:
                os.dup2(stdin_r, 0)
            elif spec.stdin_data is not None:
                os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
            os.chroot(root)
            try:
                os.chdir(spec.cwd or "/")
            except OSError as exc:
                raise ContainerError(f"working directory {spec.cwd}: {exc.strerror}") from None
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            env = dict(e.partition("=")[::2] for e in spec.env)
            env.setdefault("HOME", home or "/")
            os.execvpe(spec.args[0], spec.args, env)
        except BaseException as exc:  # noqa: BLE001
            msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            os.write(err_w, f"cannot run {spec.args[0]}: {msg}".encode())
            os._exit(127)
    os.close(err_w)
    from builder.sandbox.userns import track, untrack
    track(pid)
    if stdin_w is not None:
        os.close(stdin_r)  # type: ignore[arg-type]
        try:
            os.write(stdin_w, spec.stdin_data or b"")
        except BrokenPipeError:
            pass
        os.close(stdin_w)
    err = b""
    while chunk := os.read(err_r, 4096):
        err += chunk
    os.close(err_r)
    _, status = os.waitpid(pid, 0)
    untrack(pid)
    if err:
        raise ContainerError(err.decode(errors="replace"))
    code = os.waitstatus_to_exitcode(status)
    return RunResult(128 - code if code < 0 else code, [])
