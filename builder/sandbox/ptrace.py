"""``--isolation ptrace``: RUN where neither user namespaces nor chroot are allowed (Kubernetes
Pod Security "restricted" under containerd's RuntimeDefault: uid 1000, no capabilities,
no_new_privs). Three layers, each doing one job:

* **path view**: Debian's proot (ptrace) shows the snapshot's rootfs as ``/``, with
  /dev/{null,zero,full,random,urandom,tty}, a minimal /proc (copies of cpuinfo, meminfo...:
  no processes), private /etc/hosts, /etc/hostname, /etc/resolv.conf and /dev/pipes (a RUN
  heredoc script, read-only by the Landlock rule) bound in, and fakes
  the RUN's user (``-i UID:GID``; root for USER root). proot is no boundary (it does not
  translate openat2 and races with symlink swaps), so:
* **boundary**: Landlock (landlock.py), two domains. proot runs in one that holds the rootfs,
  the host's /tmp (proot 5.1 writes its temporary files there, by a built-in path), its own
  files and the nodes above. The RUN's first process is landlock_exec's tiny program, which
  nests a domain holding only the rootfs, the device nodes, the minimal /proc and the /etc
  copies, with the signal and abstract-socket scopes, then execs the command. So the RUN
  reaches nothing else of the pod, whichever call or race it uses, and can neither signal nor
  ptrace proot or bale (outside its domain); bale is also not dumpable meanwhile.
  ptrace_filter.py adds bale's refusals (mounts, namespaces...) and ENOSYS for what proot does
  not translate.
* **owners**: the RUN really runs as bale's uid, so every file it makes is bale's on disk. Its
  chown calls reach bale through seccomp user notifications (owner_notify.py), which records
  the owner (snapshotter/owners.py) instead of changing it; layers are written with the recorded
  owners. Files a RUN with a non-root USER makes are recorded as that user's afterwards. Its stat
  calls reach bale the same way and show the recorded owners (stat_notify.py). The notifying
  filter is the RUN's own, installed by landlock_exec's program, whose listener arrives on the
  socket proot and the program inherit at HANDOFF_FD; proot's getuid and getgid return
  ptrace_filter.SENTINEL, so its fake-root id swap never turns a chown into bale's own uid.

What the RUN does not get: its processes in /proc (there are none), a pid namespace (a daemon it starts outlives
the step until proot ends), network isolation (the pod's network is used; ``--network=none``
refuses TCP connect and bind through Landlock, UDP stays). RUN mounts are proot binds with
Landlock rules of their own (ptrace_mounts.py).
"""
from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import stat
import struct
import tempfile
from pathlib import Path
from typing import Any

from builder.errors import ContainerError, SandboxError
from builder.sandbox import kernel, landlock, landlock_exec, ptrace_filter, ptrace_mounts
from builder.sandbox.binds import PIPES, write_pipes
from builder.sandbox.owner_notify import Supervisor
from builder.sandbox.process import DEVICES, PROC_FILES, _make_point, _resolv_conf
from builder.sandbox.spec import ProcessSpec, RunResult
from builder.sandbox.userns import track, untrack
from builder.sandbox.users import resolve_user
from snapshotter import owners
from snapshotter.safepath import secure_join, walk

#: where the RUN finds landlock_exec's program (inside the minimal /proc, which is bale's)
GUEST_ENTER = "/proc/.bale-enter"
#: and proot's loader, which runs every program of the RUN
GUEST_LOADER = "/proc/.bale-loader"
#: the fd at which proot and landlock_exec's program inherit the socket the RUN's stat listener is sent on
HANDOFF_FD = 3
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: host directories proot (dynamically linked) may read and execute from, in its own domain
PROOT_READ_EXEC = ("/usr", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache")
NOTE = ("ptrace isolation: RUN runs under proot inside a Landlock domain, as bale's uid with owners "
        "recorded; it gets a minimal /proc without processes, and the pod's network")


def proot_path() -> str | None:
    """proot's path, or None when it is not installed."""
    return shutil.which("proot")


def unavailable() -> str | None:
    """None when this isolation works here, else why not (one line). Tried for real in a forked
    child: no_new_privs, the filter with its listener, a Landlock domain with the scopes."""
    if platform.machine() != "x86_64":
        return f"ptrace isolation supports x86_64 only (this is {platform.machine()})"
    if proot_path() is None:
        return "proot is not installed"
    if not os.access("/tmp", os.W_OK | os.X_OK):
        return ("/tmp is not writable (proot 5.1 writes its temporary files there: with readOnlyRootFilesystem, "
                "mount an emptyDir at /tmp)")
    version = landlock.abi()
    if version < 6:
        return (f"Landlock ABI {version} (kernel {platform.release()}): ABI 6 (Linux 6.12) with Landlock "
                "enabled is needed")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            kernel.set_no_new_privs()
            ptrace_filter.install(ptrace_filter.program())
            os.close(ptrace_filter.install(ptrace_filter.run_program(), listener=True))
            landlock.Ruleset().restrict(version)
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001 - the pipe carries the answer
            msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            os.write(w, msg.encode()[:300])
            os._exit(1)
    os.close(w)
    msg = os.read(r, 400).decode(errors="replace")
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return None if os.waitstatus_to_exitcode(status) == 0 else (msg or "refused")


_loaders: dict[str, bytes] = {}


def proot_loader(proot: str) -> bytes:
    """The 64-bit loader proot 5.1 carries inside its own binary (and otherwise extracts into the
    host's /tmp at the first execve): the first embedded ELF64 executable, sized by its section
    header table. bale hands it to proot as a file of its own (PROOT_LOADER), one the RUN's
    Landlock domain may execute. SandboxError when there is none."""
    if proot in _loaders:
        return _loaders[proot]
    data = Path(proot).read_bytes()
    at = 1
    while (at := data.find(b"\x7fELF\x02\x01\x01", at)) > 0:
        head = struct.unpack_from("<HHIQQQIHHHHHH", data, at + 16)
        e_type, machine, shoff, shentsize, shnum = head[0], head[1], head[5], head[10], head[11]
        if e_type == 2 and machine == 0x3E and shoff and shnum:
            _loaders[proot] = data[at:at + shoff + shentsize * shnum]
            return _loaders[proot]
        at += 1
    raise SandboxError(f"{proot}: no loader found inside it (a proot other than Debian's 5.1?)")


def _find(root: Path, name: str, env: list[str]) -> str:
    """The RUN's path of the command ``name`` (searched in the image's PATH when it has no /)."""
    if "/" in name:
        return name
    path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    for d in path.split(":"):
        if not d.startswith("/"):
            continue
        guest = d.rstrip("/") + "/" + name
        host = secure_join(root, guest)
        if host.is_file() and os.access(host, os.X_OK):
            return guest
    raise ContainerError(f"cannot run {name}: not found in the image's PATH")


def _private_files(priv: Path, spec: ProcessSpec) -> dict[str, Path]:
    """Write the minimal /proc and the /etc files under ``priv``; guest path -> host path."""
    proc = priv / "proc"
    proc.mkdir()
    for name in PROC_FILES:
        try:
            (proc / name).write_bytes(Path(f"/proc/{name}").read_bytes())
        except OSError:
            pass
    etc = priv / "etc"
    etc.mkdir()
    files = {
        "hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{spec.hostname}\n"
                 + "".join(f"{h.split(':', 1)[1]}\t{h.split(':', 1)[0]}\n" for h in spec.extra_hosts if ":" in h),
        "hostname": spec.hostname + "\n",
        "resolv.conf": _resolv_conf(spec.network),
    }
    out = {"/proc": proc}
    for name, text in files.items():
        (etc / name).write_text(text)
        out[f"/etc/{name}"] = etc / name
    return out


def _stamp_new(root: Path, before: dict[str, tuple[int, int]], uid: int, gid: int) -> None:
    """After a non-root RUN (``uid``:``gid``; ``before``: _paths before it): record its user on
    what it made (a new path, or a new inode at an old path, without a record; a new name of a
    file that is still at its old path is a hard link to it, whose owner stays). The RUN really
    ran as bale's uid, which owns every file: a set-uid or set-gid bit it added to a file of
    another owner (USER 1000's ``chmod u+s /bin/busybox``: the kernel refuses it in Docker) is
    taken away again, so no layer gets a set-uid file of an owner that did not set it."""
    after = _paths(root)
    live = {ino for path, (ino, _mode) in before.items() if after.get(path, (None,))[0] == ino}
    for path, (ino, mode) in after.items():
        host = os.path.join(str(root), path.lstrip("/"))
        old = before.get(path)
        if old is None or old[0] != ino:
            if ino in live:
                continue
            st = os.lstat(host)
            if not owners.has_record(host, st):
                owners.record(host, uid, gid, st.st_mode)
            continue
        gained = mode & ~old[1] & (stat.S_ISUID | stat.S_ISGID)
        if gained and not stat.S_ISLNK(mode):
            owner = owners.owner_of(host, os.lstat(host))
            if (gained & stat.S_ISUID and owner[0] != uid) or (gained & stat.S_ISGID and owner != (uid, gid)):
                os.chmod(host, stat.S_IMODE(mode) & ~gained, follow_symlinks=False)


def _paths(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` ('/a/b') -> (inode, mode), symlinks not followed."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in walk(root):
        rel = os.path.relpath(dirpath, root)
        base = "" if rel == "." else "/" + rel
        for n in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            out[f"{base}/{n}"] = (st.st_ino, st.st_mode)
    return out


def _launch(proot: str, argv: list[str], env: dict[str, str], outer: landlock.Ruleset, stdin_r: int | None, spec: ProcessSpec,
            err_w: int, handoff: socket.socket) -> None:
    """The forked child: its own session, no_new_privs, the outer filter, proot's Landlock domain,
    exec proot with ``handoff`` at HANDOFF_FD (``err_w`` is not there). Never returns. proot's
    parent-death signal is SIGQUIT, on which
    proot 5.1 SIGKILLs every tracee before it exits (src/tracee/event.c kill_all_tracees2; it sets no
    PTRACE_O_EXITKILL): with SIGKILL, a RUN's processes outlived a killed bale, detached."""
    kernel.set_pdeathsig(signal.SIGQUIT)
    os.setsid()
    kernel.child_stdin(stdin_r, spec.stdin_data)
    os.dup2(handoff.fileno(), HANDOFF_FD)
    os.set_inheritable(HANDOFF_FD, True)  # proot and the program get it (dup2 onto itself keeps close-on-exec)
    kernel.close_fds_except({err_w, HANDOFF_FD})
    kernel.set_no_new_privs()
    ptrace_filter.install(ptrace_filter.program())
    outer.restrict()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    os.execve(proot, argv, env)


def run_ptrace(spec: ProcessSpec, rootfs: Any, tmp_root: str | None = None) -> RunResult:
    """Run ``spec`` over ``rootfs.setup()`` (a plain directory: the native driver) under proot,
    Landlock and the owner recorder; returns its status (128+N for signal N). ``tmp_root``: where
    the private files go (the store's per-process temp dir), else $TMPDIR. SandboxError when the
    sandbox cannot start, ContainerError for what the RUN asked (user, command, workdir)."""
    proot = proot_path()
    if proot is None:
        raise SandboxError("ptrace isolation needs proot (apt-get install proot)")
    root = Path(os.path.realpath(rootfs.setup()))
    uid, gid, _groups, home = resolve_user(root, spec.user)
    cwd = spec.cwd or "/"
    if not secure_join(root, cwd).is_dir():
        raise ContainerError(f"working directory {cwd}: No such file or directory")
    env = list(spec.env)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={home or '/'}")
    exe = _find(root, spec.args[0], env)
    version = landlock.abi()
    everything = landlock.all_fs_rights(version)
    device = landlock.READ_FILE | landlock.WRITE_FILE | landlock.TRUNCATE
    priv = Path(tempfile.mkdtemp(prefix="bale-ptrace-", dir=tmp_root))
    before = _paths(root) if (uid, gid) != (0, 0) else None
    created: list[str] = []
    extra: list[Path] = []
    try:
        mounts, extra = ptrace_mounts.prepare(spec.mounts, root, priv, everything)
        # a non-root RUN's files in a cache mount are its user's too (kept for the next RUN and cache export)
        kept = {m.host: _paths(Path(m.host)) for m in mounts if m.shared and m.is_dir} if before is not None else {}
        binds = _private_files(priv, spec)
        guest_rules = [("/", everything), ("/proc", landlock.READ)]
        if spec.pipes:  # a RUN heredoc script: read and run, never written (BuildKit's is a read-only mount)
            binds[PIPES] = priv / "pipes"
            binds[PIPES].mkdir(mode=0o755)
            write_pipes(binds[PIPES], spec.pipes)
            guest_rules.append((PIPES, landlock.READ_EXEC))
        guest_rules += [(g, landlock.READ_FILE) for g in binds if g.startswith("/etc/")]
        devices = [f"/dev/{d}" for d in DEVICES if os.path.exists(f"/dev/{d}")]
        guest_rules += [(d, device) for d in devices]
        guest_rules += [(m.guest, ptrace_mounts.file_rights(m)) for m in mounts]
        loader = binds["/proc"] / GUEST_LOADER.rsplit("/", 1)[1]
        loader.write_bytes(proot_loader(proot))
        os.chmod(loader, 0o500)
        guest_rules.append((GUEST_LOADER, landlock.READ_FILE | landlock.EXECUTE))
        enter = binds["/proc"] / GUEST_ENTER.rsplit("/", 1)[1]
        enter.write_bytes(landlock_exec.build(
            guest_rules, everything, landlock.SCOPE_SIGNAL | landlock.SCOPE_ABSTRACT_UNIX_SOCKET,
            exe.encode(), [a.encode() for a in spec.args], [e.encode() for e in env],
            landlock.NET_TCP if spec.network == "none" else 0,
            ptrace_filter.encode(ptrace_filter.run_program()), HANDOFF_FD))
        os.chmod(enter, 0o500)
        outer = landlock.Ruleset()
        outer.allow(str(root), everything)
        outer.allow("/tmp", everything)
        outer.allow(str(priv), landlock.READ_EXEC)
        for p in PROOT_READ_EXEC:
            outer.allow(p, landlock.READ_EXEC)
        outer.allow(os.path.realpath(proot), landlock.READ_EXEC)
        for d in devices:
            outer.allow(d, device)
        for m in mounts:
            outer.allow(m.host, ptrace_mounts.file_rights(m))
        # the bind targets exist before proot starts (it would make and remove placeholders, changing
        # their directories): made here, and dropped from the layer while empty, as in every isolation
        for guest in [*binds, *devices]:
            _make_point(root, guest, guest in ("/proc", PIPES), created)
        for m in mounts:
            _make_point(root, m.guest, m.is_dir, created)
        # -v -1: proot's errors only (its notes, e.g. on a killed process, would mix into the RUN's output)
        argv = [proot, "-v", "-1", *(["-0"] if (uid, gid) == (0, 0) else ["-i", f"{uid}:{gid}"]), "-r", str(root),
                "-w", cwd]
        for guest, host in binds.items():
            argv += ["-b", f"{host}:{guest}"]
        for d in devices:
            argv += ["-b", d]
        for m in mounts:
            argv += ["-b", f"{m.host}:{m.guest}"]
        argv.append(GUEST_ENTER)
        status = _run(proot, argv, {"PATH": "/usr/bin:/bin", "LANG": "C", "PROOT_LOADER": str(loader)}, outer, spec,
                      str(root), (uid, gid),
                      frozenset(ino for paths in [before or {}, *kept.values()] for ino, _ in paths.values()),
                      tuple((m.guest, m.host, bool(m.rights & landlock.WRITE_FILE)) for m in mounts),
                      tuple((g, str(h)) for g, h in binds.items()) + tuple((d, d) for d in devices))
        if before is not None:
            _stamp_new(root, before, uid, gid)
            for kept_host, paths in kept.items():
                _stamp_new(Path(kept_host), paths, uid, gid)
    finally:
        shutil.rmtree(priv, ignore_errors=True)
        for gone in extra:
            shutil.rmtree(gone, ignore_errors=True)
    return RunResult(status, created)


def _run(proot: str, argv: list[str], env: dict[str, str], outer: landlock.Ruleset, spec: ProcessSpec,
         root: str, fake: tuple[int, int], existing: frozenset[int] = frozenset(),
         binds: tuple[tuple[str, str, bool], ...] = (), private: tuple[tuple[str, str], ...] = ()) -> int:
    """Fork the launcher, answer its notifications until proot ends; the exit status. ``existing``:
    inodes of the rootfs before a non-root RUN (the others without a record are its own); ``binds``:
    the RUN's mounts, (guest path, host path, writable), where its chown calls are recorded too;
    ``private``: proot's other binds (guest path, host path), for the RUN's stat calls."""
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)  # the listener's way to bale
    stdin = os.pipe() if spec.stdin_data else None  # (read, write)
    stdin_r = stdin[0] if stdin else None
    pid = os.fork()
    if pid == 0:
        try:
            os.close(err_r)
            ours.close()
            if err_w == HANDOFF_FD:
                err_w = os.dup(err_w)  # (close-on-exec)
            _launch(proot, argv, env, outer, stdin_r, spec, err_w, theirs)
        except BaseException as exc:  # noqa: BLE001 - reported through the pipe
            msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            os.write(err_w, f"ptrace isolation: {msg}".encode()[:4000])
        finally:
            os._exit(127)
    os.close(err_w)
    theirs.close()
    track(pid, quit=True)  # proot: SIGQUIT, so it kills the RUN's processes (SIGKILL detached them)
    supervisor = None
    try:
        supervisor = Supervisor(ours, root, fake, existing, binds, private)
        supervisor.start()
        err, wstatus = kernel.feed_and_wait(pid, stdin, spec.stdin_data or b"", err_r)
    finally:
        untrack(pid)
        try:
            os.killpg(pid, signal.SIGKILL)  # whatever of the RUN outlived proot
        except OSError:
            pass
        if supervisor is not None:
            supervisor.stop()
        else:
            ours.close()
    if err:
        raise SandboxError(err.decode(errors="replace"))
    code = os.waitstatus_to_exitcode(wstatus)
    return 128 - code if code < 0 else code

