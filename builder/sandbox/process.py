"""Inside the namespaces: mount the snapshot, prepare the container's /proc,
/dev, /sys and /etc files, fork PID 1, pivot_root into the rootfs, drop to the
image's user and exec. Runs in the child made by UserNamespace.run."""
from __future__ import annotations

import os
import signal
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
    """Child A: set up, fork PID 1, wait for it; returns the status and the mountpoints it made
    (the differ drops them while empty, with the directories that changed only to hold them)."""
    from builder.sandbox import kernel
    from builder.sandbox.users import resolve_user
    from snapshotter.drivers import in_initial_userns
    if spec.network == "none":
        sc.bring_loopback_up()
    root = Path(rootfs.setup())
    if not os.path.ismount(root):
        sc.mount(str(root), str(root), None, sc.MS_BIND | sc.MS_REC)
    created: list[str] = []
    for d in MOUNT_DIRS:
        _make_point(root, d, True, created)
    etc_targets = {f: _make_point(root, f, False, created) for f in ETC_FILES}
    binds = [(m, _make_point(root, m.dest, m.type == "tmpfs" or (m.type == "bind" and os.path.isdir(
        m.host_source())), created)) for m in spec.mounts]
    uid, gid, groups, home = resolve_user(root, spec.user)
    if not full_mapping and (uid, gid) != (0, 0):
        raise ContainerError(f"cannot run as user {spec.user}: the user namespace maps a single id "
                             "(add a subuid/subgid range for this user)")
    etc = {"/etc/hosts": (
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{spec.hostname}\n"
        + "".join(f"{h.split(':', 1)[1]}\t{h.split(':', 1)[0]}\n" for h in spec.extra_hosts if ":" in h)),
        "/etc/hostname": spec.hostname + "\n", "/etc/resolv.conf": _resolv_conf(spec.network)}
    userns = not in_initial_userns()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        try:
            _pid1(spec, root, {etc_targets[k]: v.encode() for k, v in etc.items()}, binds,
                  (uid, gid, groups, home), full_mapping, userns, stdin_r, err_w)
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
    signal.signal(signal.SIGHUP, forward)
    err = b""
    while chunk := os.read(err_r, 4096):
        err += chunk
    os.close(err_r)
    wstatus = kernel.wait_exit(pid)
    code = os.waitstatus_to_exitcode(wstatus)
    if err:
        kind, _, msg = err.decode(errors="replace").partition("\0")
        if kind == "ContainerError":
            raise ContainerError(msg)
        raise SandboxError(msg)
    return RunResult(128 - code if code < 0 else code, created)


PROC_FILES = ("cpuinfo", "meminfo", "stat", "uptime", "loadavg", "version", "filesystems")


def mount_proc(target: str) -> bool:
    """A fresh proc of the RUN's pid namespace on ``target``; True. Where that is refused (inside
    containers, whose /proc has locked over-mounts), never the outer /proc: a read-only tmpfs with
    only pid-independent files (cpuinfo, meminfo, ...) bound from it; False."""
    try:
        sc.mount("proc", target, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        return True
    except OSError:
        pass
    sc.mount("tmpfs", target, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "mode=0555,size=64k")
    for name in PROC_FILES:
        p = f"{target}/{name}"
        open(p, "w").close()
        try:
            sc.mount(f"/proc/{name}", p, None, sc.MS_BIND)
        except OSError:
            os.unlink(p)
    sc.make_readonly_recursive(target)
    return False


def _pid1(spec: ProcessSpec, root: Path, etc_files: dict[Path, bytes], binds: list[Any],
          user: tuple[int, int, list[int], str], full_mapping: bool, userns: bool, stdin_r: int | None,
          err_w: int) -> None:
    """PID 1 of the RUN's pid namespace, in a mount namespace of its own (so pivot_root does not
    move child A's root, which then still reaches the host to clean up)."""
    from builder.sandbox import kernel, seccomp
    from builder.sandbox.binds import Stage, mount_binds, mount_pipes
    kernel.set_pdeathsig(signal.SIGKILL)
    # a session of its own: kill(0, ...) or kill(-pgid, ...) from the RUN reaches only its own
    # processes, never bale's process group (the caller's shell, a CI runner's job)
    os.setsid()
    sc.unshare(sc.CLONE_NEWNS)

    def j(p: str) -> str:
        return str(secure_join(root, p))
    mount_proc(j("/proc"))
    dev = j("/dev")
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "mode=755,size=65536k")
    stage = Stage(dev)
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
                         ("stderr", "/proc/self/fd/2")):
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
    for host, data in etc_files.items():
        sc.mount(str(stage.file(data)), str(host), None, sc.MS_BIND)
        sc.make_readonly_recursive(str(host), lockdown=False)
    mount_pipes(dev, spec.pipes)
    mount_binds(stage, binds, userns)
    stage.close()
    try:
        sc.sethostname(spec.hostname)
    except OSError:
        pass  # refused by a seccomp profile: the outer hostname stays (bale info says so)
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
    # Docker's capability set, and the seccomp filter (no mounts, no new namespaces...): installed
    # while PID 1 still holds CAP_SYS_ADMIN in its namespace, so no_new_privs is not needed here
    kernel.drop_bounding(kernel.DEFAULT_CAPS)
    seccomp.install()
    try:
        if full_mapping:
            os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise ContainerError(f"cannot switch to user {spec.user}: {exc.strerror}") from None
    kernel.limit_caps(kernel.DEFAULT_CAPS)
    kernel.set_pdeathsig(signal.SIGKILL)  # setresuid cleared it: die with child A, always
    env = dict(e.partition("=")[::2] for e in spec.env)
    env.setdefault("HOME", home or "/")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    kernel.close_fds_except({err_w})
    try:
        os.execvpe(spec.args[0], spec.args, env)
    except OSError as exc:
        raise ContainerError(f"cannot run {spec.args[0]}: {exc.strerror}") from None
