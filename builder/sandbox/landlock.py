"""Landlock (Linux >= 5.13; the scopes need ABI 6, Linux 6.12) through ctypes: the boundary of
the ptrace isolation (ptrace.py). A ruleset lists what the process may still reach; everything
else of the file system is refused to it and to everything it execs or forks, whatever path
it names and through whichever system call (openat2, io_uring...), with no capability and no
mount needed, only no_new_privs (which restricted pods set anyway).

Rights follow include/uapi/linux/landlock.h. ``abi()`` is 0 where Landlock is missing or
disabled. Errors are OSError naming the call.
"""
from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass, field

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

#: landlock_create_ruleset, landlock_add_rule, landlock_restrict_self (the same on every arch)
SYS_CREATE, SYS_ADD_RULE, SYS_RESTRICT = 444, 445, 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
NET_TCP = NET_BIND_TCP | NET_CONNECT_TCP

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

#: rights that may be given on a file (not only a directory)
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ = READ_FILE | READ_DIR
READ_EXEC = READ | EXECUTE


def abi() -> int:
    """The Landlock ABI version this kernel offers; 0 when absent or disabled."""
    if platform.system() != "Linux":
        return 0
    ret = int(_libc.syscall(SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION)))
    return ret if ret > 0 else 0


def all_fs_rights(version: int) -> int:
    """Every file-system right ABI ``version`` knows (the rights a ruleset handles)."""
    rights = (1 << 13) - 1
    if version >= 2:
        rights |= REFER
    if version >= 3:
        rights |= TRUNCATE
    if version >= 5:
        rights |= IOCTL_DEV
    return rights


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


@dataclass
class Ruleset:
    """What a process restricted by ``restrict()`` may still do on the file system: ``rules``
    maps a path (a directory: the rights hold beneath it; a file: for it alone) to its rights.
    A path that does not exist is skipped. ``scoped``: the scope flags (signals, abstract unix
    sockets) that also hold."""

    rules: dict[str, int] = field(default_factory=dict)
    scoped: int = SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET

    def allow(self, path: str, rights: int) -> None:
        """Add ``rights`` for ``path`` (merged with what it already has)."""
        self.rules[path] = self.rules.get(path, 0) | rights

    def restrict(self, version: int | None = None) -> None:
        """Apply to the calling thread (inherited across fork and exec; cannot be undone). Needs
        no_new_privs set first. OSError when the kernel refuses; ValueError below ABI 6 (no scopes:
        the RUN could signal bale's processes)."""
        version = abi() if version is None else version
        if version < 6:
            raise ValueError(f"Landlock ABI {version} (kernel {platform.release()}): ABI 6 (Linux 6.12) is needed")
        handled = all_fs_rights(version)
        attr = _RulesetAttr(handled, 0, self.scoped)
        rfd = _check(int(_libc.syscall(SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                                       ctypes.c_uint32(0))), "landlock_create_ruleset")
        try:
            for path, rights in sorted(self.rules.items()):
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                try:
                    is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
                    allowed = rights & handled if is_dir else rights & handled & FILE_RIGHTS
                    rule = _PathBeneath(allowed, fd)
                    _check(int(_libc.syscall(SYS_ADD_RULE, rfd, RULE_PATH_BENEATH, ctypes.byref(rule),
                                             ctypes.c_uint32(0))), f"landlock_add_rule({path})")
                finally:
                    os.close(fd)
            _check(int(_libc.syscall(SYS_RESTRICT, rfd, ctypes.c_uint32(0))), "landlock_restrict_self")
        finally:
            os.close(rfd)
