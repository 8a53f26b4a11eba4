"""Inside the namespaces: mount the snapshot, prepare the container's /proc,
/dev, /sys and /etc files, fork PID 1, pivot_root into the rootfs, drop to the
image's user and exec. Runs in the child made by UserNamespace.run."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from builder.errors import ContainerError, SandboxError
from builder.sandbox.spec import ProcessSpec, RunResult
from snapshotter import syscalls as sc
from snapshotter.safepath import secure_join

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
MOUNT_DIRS = ("/proc", "/dev", "/sys")
ETC_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


def _make_point(root: Path, cpath: str, is_dir: bool, created: list[str]) -> Path:
    """The host path for mountpoint ``cpath``, made (with parents) if absent; records what it made."""
    target = secure_join(root, cpath)
    if os.path.lexists(target):
        return target
    parts = os.path.relpath(target, root).split("/")
    cur = root
    for i, part in enumerate(parts):
        cur = cur / part
        last = i == len(parts) - 1
        if not os.path.lexists(cur):
            if last and not is_dir:
                cur.touch(mode=0o644)
            else:
                os.mkdir(cur, 0o755)
            created.append("/" + os.path.relpath(cur, root))
    return target


DEFAULT_RESOLV = "nameserver 8.8.8.8\nnameserver 1.1.1.1\n"


def _resolv_conf(network: str = "host") -> str:
    """The host's resolvers (the default network is the host's). Without a network, a host file
    naming only loopback resolvers (systemd-resolved's 127.0.0.53) or none at all would be
    meaningless in the container: a sane default is written instead."""
    try:
        text = Path("/etc/resolv.conf").read_text()
    except OSError:
        text = ""
    if network == "none":
        servers = [l.split()[1] for l in text.splitlines() if l.startswith("nameserver") and len(l.split()) > 1]
        if not servers or all(s.startswith("127.") or s == "::1" for s in servers):
            return DEFAULT_RESOLV
    return text


def run_in_namespace(spec: ProcessSpec, rootfs: Any, full_mapping: bool, stdin_r: int | None) -> RunResult:
    """Child A: set up, fork PID 1, wait for it; returns the status and created mountpoints."""
    from builder.sandbox.users import resolve_user
    if spec.network == "none":
        sc.bring_loopback_up()
    root = Path(rootfs.setup())
    if not os.path.ismount(root):
        sc.mount(str(root), str(root), None, sc.MS_BIND | sc.MS_REC)
    created: list[str] = []
    for d in MOUNT_DIRS:
        _make_point(root, d, True, created)
    etc_targets = {f: _make_point(root, f, False, created) for f in ETC_FILES}
    binds = [(m, _make_point(root, m.dest, m.type == "tmpfs" or os.path.isdir(m.host_source()), created))
             for m in spec.mounts]
    uid, gid, groups, home = resolve_user(root, spec.user)
    if not full_mapping and (uid, gid) != (0, 0):
        raise ContainerError(f"cannot run as user {spec.user}: the user namespace maps a single id "
                             "(add a subuid/subgid range for this user)")
    etc_dir = Path(tempfile.mkdtemp(prefix="bale-etc-"))
    try:
        (etc_dir / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{spec.hostname}\n"
            + "".join(f"{h.split(':', 1)[1]}\t{h.split(':', 1)[0]}\n" for h in spec.extra_hosts if ":" in h))
        (etc_dir / "hostname").write_text(spec.hostname + "\n")
        (etc_dir / "resolv.conf").write_text(_resolv_conf(spec.network))
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(err_r)
            try:
                _pid1(spec, root, etc_targets, etc_dir, binds, (uid, gid, groups, home), full_mapping, stdin_r)
            except BaseException as exc:  # noqa: BLE001 - reported to A through the pipe
                msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                os.write(err_w, f"{type(exc).__name__}\0{msg}".encode()[:4000])
                os._exit(127)
        os.close(err_w)

        def forward(signum: int, frame: Any) -> None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        err = b""
        while chunk := os.read(err_r, 4096):
            err += chunk
        os.close(err_r)
        _, wstatus = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(wstatus)
    finally:
        shutil.rmtree(etc_dir, ignore_errors=True)
    if err:
        kind, _, msg = err.decode(errors="replace").partition("\0")
        if kind == "ContainerError":
            raise ContainerError(msg)
        raise SandboxError(msg)
    return RunResult(128 - code if code < 0 else code, created)


def _pid1(spec: ProcessSpec, root: Path, etc_targets: dict[str, Path], etc_dir: Path, binds: list,
          user: tuple[int, int, list[int], str], full_mapping: bool, stdin_r: int | None) -> None:
    sc.set_pdeathsig(signal.SIGKILL)
    j = lambda p: str(secure_join(root, p))  # noqa: E731
    try:
        sc.mount("proc", j("/proc"), "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    except OSError:  # inside containers a fresh proc is refused: bind the outer one
        sc.mount("/proc", j("/proc"), None, sc.MS_BIND | sc.MS_REC)
    dev = j("/dev")
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "mode=755,size=65536k")
    for d in DEVICES:
        open(f"{dev}/{d}", "w").close()
        try:
            sc.mount(f"/dev/{d}", f"{dev}/{d}", None, sc.MS_BIND)
        except OSError:
            os.unlink(f"{dev}/{d}")
    os.mkdir(f"{dev}/pts")
    try:
        sc.mount("devpts", f"{dev}/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
                 "newinstance,ptmxmode=0666,mode=0620" + (",gid=5" if full_mapping else ""))
        os.symlink("pts/ptmx", f"{dev}/ptmx")
    except OSError:
        pass
    os.mkdir(f"{dev}/shm")
    sc.mount("tmpfs", f"{dev}/shm", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777,size=65536k")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore")):
        os.symlink(target, f"{dev}/{name}")
    sys_dir = j("/sys")
    mounted = False
    if spec.network == "none":
        try:
            sc.mount("sysfs", sys_dir, "sysfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
            mounted = True
        except OSError:
            pass
    if not mounted:
        sc.mount("/sys", sys_dir, None, sc.MS_BIND | sc.MS_REC)
        sc.make_readonly_recursive(sys_dir)
    for cpath, host in etc_targets.items():
        sc.mount(str(etc_dir / os.path.basename(cpath)), str(host), None, sc.MS_BIND)
        sc.make_readonly_recursive(str(host), lockdown=False)
    for m, host in binds:
        if m.type == "tmpfs":
            sc.mount("tmpfs", str(host), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777")
        else:
            sc.mount(m.host_source(), str(host), None, sc.MS_BIND | sc.MS_REC)
            if m.readonly:
                sc.make_readonly_recursive(str(host), lockdown=False)
    sc.sethostname(spec.hostname)
    if stdin_r is not None:
        os.dup2(stdin_r, 0)
    elif spec.stdin_data is not None:
        fd = os.open("/dev/null", os.O_RDONLY)
        os.dup2(fd, 0)
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount(".", sc.MNT_DETACH)
    os.chdir("/")
    uid, gid, groups, home = user
    try:
        os.chdir(spec.cwd or "/")
    except OSError as exc:
        raise ContainerError(f"working directory {spec.cwd}: {exc.strerror}") from None
    try:
        if full_mapping:
            os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise ContainerError(f"cannot switch to user {spec.user}: {exc.strerror}") from None
    env = dict(e.partition("=")[::2] for e in spec.env)
    env.setdefault("HOME", home or "/")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvpe(spec.args[0], spec.args, env)
    except OSError as exc:
        raise ContainerError(f"cannot run {spec.args[0]}: {exc.strerror}") from None
