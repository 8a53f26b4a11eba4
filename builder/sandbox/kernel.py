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


def _prctl(option: int, arg: int = 0, what: str = "prctl") -> int:
    ret: int = _libc.prctl(option, arg, 0, 0, 0)
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


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Die with the parent. A change of user (setresuid) clears it: call again after every one."""
    _prctl(PR_SET_PDEATHSIG, sig, "prctl(PR_SET_PDEATHSIG)")


def set_no_new_privs() -> None:
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")


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
