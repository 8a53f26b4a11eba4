"""Process-hardening calls the sandbox needs (prctl, capabilities), through ctypes.

Linux only; every function raises OSError with the call's name on failure.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import threading

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


def _prctl(option: int, arg: int = 0, what: str = "prctl", arg3: int = 0) -> int:
    ret: int = _libc.prctl(option, arg, arg3, 0, 0)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def set_dumpable(on: bool) -> None:
    """PR_SET_DUMPABLE: a non-dumpable process's /proc entries belong to root and it cannot be
    ptrace'd by its own uid, so a RUN with bale's uid can read neither its environ nor its fds."""
    _prctl(PR_SET_DUMPABLE, 1 if on else 0, "prctl(PR_SET_DUMPABLE)")


def is_dumpable() -> bool:
    return _prctl(PR_GET_DUMPABLE, 0, "prctl(PR_GET_DUMPABLE)") == 1


PTRACE_DETACH = 17


def wait_exit(pid: int) -> int:
    """waitpid(``pid``)'s status (os.waitpid's int) once ``pid`` has ended. A RUN's process can make
    its parent, bale, its tracer (PTRACE_TRACEME: ``RUN ["/traceme"]`` gave 'RUN: ValueError: process
    stopped by delivery of signal 10'; proot 5.1's ptrace emulation does it to proot): each stop
    reported is handed back at once (PTRACE_DETACH with its signal), so the process goes on as an
    untraced one would."""
    while True:
        _, status = os.waitpid(pid, 0)
        if not os.WIFSTOPPED(status):
            return status
        _libc.ptrace(PTRACE_DETACH, pid, None, ctypes.c_void_p(os.WSTOPSIG(status)))


def feed_and_wait(pid: int, stdin: tuple[int, int] | None, data: bytes, err_r: int) -> tuple[bytes, int]:
    """Parent side of a forked RUN process: write ``data`` into its stdin pipe (``stdin``: the
    (read, write) ends, or None when it has none; a RUN that closed its stdin early is no error),
    read its error pipe ``err_r`` to the end (what the child wrote before exec failed; empty once
    the exec closed it) and wait for its exit (wait_exit). Every fd given is closed. Returns
    (error bytes, waitpid status)."""
    if stdin is not None:
        stdin_r, stdin_w = stdin
        os.close(stdin_r)
        try:
            os.write(stdin_w, data)
        except BrokenPipeError:
            pass
        os.close(stdin_w)
    err = b""
    while chunk := os.read(err_r, 4096):
        err += chunk
    os.close(err_r)
    return err, wait_exit(pid)


def child_stdin(stdin_r: int | None, data: bytes | None) -> None:
    """Child side of a forked RUN process's stdin, before exec: fd 0 becomes ``stdin_r`` (the read
    end of the pipe feed_and_wait writes into), else /dev/null when the RUN was given stdin data
    that is empty (``data`` not None), else bale's own stdin stays. OSError from dup2/open."""
    if stdin_r is not None:
        os.dup2(stdin_r, 0)
    elif data is not None:
        os.dup2(os.open("/dev/null", os.O_RDONLY), 0)


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Die with the parent. A change of user (setresuid) clears it: call again after every one."""
    _prctl(PR_SET_PDEATHSIG, sig, "prctl(PR_SET_PDEATHSIG)")


def set_no_new_privs() -> None:
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")


#: Docker's (and containerd's) default capability set for a container process
DEFAULT_CAPS = frozenset({0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31})
# CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD
# AUDIT_WRITE SETFCAP
CAP_MKNOD = 27
_CAP_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 40


def drop_bounding(keep: frozenset[int]) -> None:
    """Drop every capability not in ``keep`` from the bounding set (needs CAP_SETPCAP) and clear the
    ambient set: nothing outside ``keep`` can come back through exec."""
    for cap in range(_last_cap() + 1):
        if cap not in keep:
            try:
                _prctl(PR_CAPBSET_DROP, cap, "prctl(PR_CAPBSET_DROP)")
            except OSError as exc:
                if exc.errno != 22:  # EINVAL: not a capability this kernel knows
                    raise
    try:
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "prctl(PR_CAP_AMBIENT)")
    except OSError:
        pass


def limit_caps(keep: frozenset[int]) -> None:
    """Reduce the effective, permitted and inheritable sets to ``keep`` (capset)."""
    hdr = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(hdr), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capget: {os.strerror(err)}")
    for i in range(2):
        mask = sum(1 << (c - 32 * i) for c in keep if 32 * i <= c < 32 * (i + 1))
        data[i].effective &= mask
        data[i].permitted &= mask
        data[i].inheritable &= mask
    if _libc.capset(ctypes.byref(hdr), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def close_fds_except(keep: set[int]) -> None:
    """Close every fd >= 3 not in ``keep`` (before exec: nothing of bale's reaches the RUN)."""
    top = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    top = 1 << 20 if top == resource.RLIM_INFINITY or top > 1 << 20 else top
    lo = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, top)


_undumpable_lock = threading.Lock()
_undumpable_depth = 0


class undumpable:
    """While inside (re-entrant across threads): bale's process is not dumpable, so a RUN with
    bale's uid can neither read /proc/BALE/environ nor open /proc/BALE/fd/N nor ptrace it."""

    def __enter__(self) -> None:
        global _undumpable_depth
        with _undumpable_lock:
            if _undumpable_depth == 0:
                set_dumpable(False)
            _undumpable_depth += 1

    def __exit__(self, *exc: object) -> None:
        global _undumpable_depth
        with _undumpable_lock:
            _undumpable_depth -= 1
            if _undumpable_depth == 0:
                set_dumpable(True)
