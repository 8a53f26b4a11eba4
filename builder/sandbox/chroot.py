"""``--isolation chroot``: for a process that is root inside a container that
may create neither user namespaces nor mounts (Docker's and Kubernetes'
RuntimeDefault seccomp). The rootfs is a plain directory (native driver); the
command runs chrooted in it as the image's user, hardened at least as buildah's
chroot isolation is:

* capabilities cut to Docker's default set, less CAP_MKNOD; no_new_privs;
* a strict seccomp filter (seccomp.py): no chroot (the double-chroot escape), no
  mount/unshare/setns/ptrace/process_vm_*, and no signal aimed at bale or at -1;
* its own session (setsid), every fd but 0-2 closed, the parent-death signal set
  again after the change of user;
* /dev/{null,zero,full,random,urandom,tty} made as device nodes when bale may
  (CAP_MKNOD) and removed again afterwards, with anything the RUN left under those
  names: nothing that makes /dev work reaches a layer; the same for /dev/pipes, which
  holds a RUN heredoc script (writable here: no read-only mount can be made).

No /proc and no /sys can be given without mounts; ``note()`` says so once.
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
from pathlib import Path
from typing import Any

from builder.errors import ContainerError, SandboxError
from builder.sandbox import kernel, seccomp
from builder.sandbox.binds import write_pipes
from builder.sandbox.spec import ProcessSpec, RunResult
from builder.sandbox.userns import track, untrack
from builder.sandbox.users import resolve_user
from snapshotter.safepath import secure_join

DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
NOTE = "chroot isolation: the RUN gets no /proc and no /sys (mounts are not allowed here)"


def _prepare_dev(root: Path) -> tuple[list[str], list[str]]:
    """Device nodes for /dev; returns (names made, container paths of directories made)."""
    made_dirs: list[str] = []
    dev = secure_join(root, "/dev")
    if not os.path.lexists(dev):
        os.mkdir(dev, 0o755)
        made_dirs.append("/dev")
    if not dev.is_dir() or dev.is_symlink():
        return [], made_dirs
    made = []
    for name, (major, minor) in DEVICES.items():
        p = dev / name
        if os.path.lexists(p):
            continue
        try:
            os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            os.chmod(p, 0o666)
            made.append(name)
        except OSError:
            pass  # no CAP_MKNOD: the name stays free, and whatever the RUN puts there is removed
    return made, made_dirs


def _clean_dev(root: Path, before: set[str]) -> None:
    """Remove every /dev/NAME (of DEVICES) that was not there before the RUN."""
    dev = secure_join(root, "/dev")
    if not dev.is_dir() or dev.is_symlink():
        return
    for name in DEVICES:
        if name in before:
            continue
        p = dev / name
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
        except FileNotFoundError:
            pass


def _place_pipes(root: Path, files: dict[str, bytes]) -> None:
    """/dev/pipes with ``files`` (a RUN heredoc script), made in the rootfs since no mount is
    allowed here; _remove_pipes takes it away again, with whatever the RUN left in it (BuildKit's
    is a read-only mount on /dev's tmpfs: nothing of it reaches a layer)."""
    if not files:
        return
    dev = secure_join(root, "/dev")
    pipes = dev / "pipes"
    if not dev.is_dir() or dev.is_symlink() or os.path.lexists(pipes):
        raise ContainerError("chroot isolation: the image's /dev has no room for /dev/pipes, where the RUN's "
                             "heredoc script goes")
    os.mkdir(pipes, 0o755)
    os.chmod(pipes, 0o755)
    write_pipes(pipes, files)


def _remove_pipes(root: Path) -> None:
    dev = secure_join(root, "/dev")
    pipes = dev / "pipes"
    if not dev.is_dir() or dev.is_symlink() or not os.path.lexists(pipes):
        return
    if os.path.isdir(pipes) and not os.path.islink(pipes):
        shutil.rmtree(pipes)
    else:
        os.unlink(pipes)


def _child(spec: ProcessSpec, root: Path, user: tuple[int, int, list[int], str], stdin_r: int | None,
           err_w: int, protect: tuple[int, ...]) -> None:
    uid, gid, groups, home = user
    kernel.set_pdeathsig(signal.SIGKILL)
    os.setsid()
    kernel.child_stdin(stdin_r, spec.stdin_data)
    kernel.close_fds_except({err_w})
    os.chroot(root)
    try:
        os.chdir(spec.cwd or "/")
    except OSError as exc:
        raise ContainerError(f"working directory {spec.cwd}: {exc.strerror}") from None
    kernel.drop_bounding(kernel.DEFAULT_CAPS - {kernel.CAP_MKNOD})
    kernel.set_no_new_privs()
    seccomp.install(strict=True, protect=protect)
    try:
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise ContainerError(f"cannot switch to user {spec.user}: {exc.strerror}") from None
    kernel.limit_caps(kernel.DEFAULT_CAPS - {kernel.CAP_MKNOD})
    kernel.set_pdeathsig(signal.SIGKILL)  # cleared by the change of user
    env = dict(e.partition("=")[::2] for e in spec.env)
    env.setdefault("HOME", home or "/")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvpe(spec.args[0], spec.args, env)
    except OSError as exc:
        raise ContainerError(f"cannot run {spec.args[0]}: {exc.strerror}") from None


def run_chroot(spec: ProcessSpec, rootfs: Any) -> RunResult:
    """Run ``spec`` chrooted into ``rootfs.setup()``; returns its status (128+N for signal N)."""
    if os.geteuid() != 0:
        raise SandboxError("chroot isolation needs root (inside its container)")
    root = Path(rootfs.setup())
    user = resolve_user(root, spec.user)
    if spec.mounts:
        raise SandboxError("RUN mounts need mount namespaces, which chroot isolation does not have")
    dev = root / "dev"
    real_dev = dev.is_dir() and not dev.is_symlink()
    before = {n for n in DEVICES if os.path.lexists(dev / n)} if real_dev else set()
    dev_stat = os.stat(dev) if real_dev else None
    dev_names = set(os.listdir(dev)) if real_dev else set()
    root_stat = os.stat(root)
    _made, made_dirs = _prepare_dev(root)
    protect = (os.getpid(), -os.getpgrp())
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    stdin = os.pipe() if spec.stdin_data else None  # (read, write)
    stdin_r = stdin[0] if stdin else None
    try:
        _place_pipes(root, spec.pipes)
        pid = os.fork()
        if pid == 0:
            try:
                os.close(err_r)
                _child(spec, root, user, stdin_r, err_w, protect)
            except BaseException as exc:  # noqa: BLE001 - reported through the pipe
                msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                os.write(err_w, f"cannot run {spec.args[0]}: {msg}".encode()[:4000])
            finally:
                os._exit(127)
        os.close(err_w)
        track(pid)
        try:
            err, status = kernel.feed_and_wait(pid, stdin, spec.stdin_data or b"", err_r)
        finally:
            untrack(pid)
    finally:
        _remove_pipes(root)
        _clean_dev(root, before)
        # the nodes came and went: /dev's times as they were, unless the RUN changed what it holds
        if dev_stat is not None and dev.is_dir() and set(os.listdir(dev)) == dev_names:
            os.utime(dev, ns=(dev_stat.st_atime_ns, dev_stat.st_mtime_ns))
        if not real_dev and dev.is_dir() and not dev.is_symlink() and not os.listdir(dev):
            os.rmdir(dev)  # made for the nodes only: gone again, and / as it was
            os.utime(root, ns=(root_stat.st_atime_ns, root_stat.st_mtime_ns))
    if err:
        raise ContainerError(err.decode(errors="replace"))
    code = os.waitstatus_to_exitcode(status)
    return RunResult(128 - code if code < 0 else code, made_dirs)
