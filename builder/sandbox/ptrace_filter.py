"""The seccomp filters of the ptrace isolation (ptrace.py), x86_64 only, like landlock_exec:

``program()``, installed before proot is exec'd, holds for proot and for every process of the RUN:

* what bale's RUN filter refuses everywhere (seccomp.REFUSED: mounts, namespaces, kexec, bpf...),
  and clone with CLONE_UNTRACED (a child proot would not trace: it outlived the step and bale);
* ENOSYS for the calls proot 5.1 does not translate (statx, openat2, faccessat2, renameat2,
  execveat, fchmodat2, the *xattrat calls, file_getattr/setattr) and for io_uring, whose requests
  name paths proot never sees: C libraries fall back to the older calls, which proot translates
  (a RUN that insists gets nothing outside its Landlock domain either way);
* getuid and getgid return SENTINEL, (uid_t)-2 (RET_ERRNO 2: glibc's getuid returns the raw
  result). proot calls them only in its fake_id0 extension: its chown swap then hands a chown to
  the faked id over as SENTINEL, never as bale's uid, so a RUN's chown to bale's own uid or gid
  number is recorded as named (owner_notify.py); its stat rewrite (uid == getuid()) never fires.
  The RUN's own getuid results are replaced by proot at the call's exit, as always.

``run_program()`` is the RUN's own filter, which landlock_exec's program installs with a user
notification listener (handed to bale) before it execs the command: it holds for the RUN's
processes only, never for proot (a filter tree has one listener at most: the kernel refuses a
second with EBUSY, so the outer filter has none). SECCOMP_RET_USER_NOTIF for chown, fchown,
lchown, fchownat and the calls that set or remove extended attributes (owner_notify.py records
owners instead of changing them), and for stat, fstat, lstat and newfstatat (stat_notify.py shows
the recorded owners). proot 5.1 runs without seccomp acceleration, so it stops every call at its
entry before any filter runs: paths arrive translated (host paths), ids swapped. statx gets
ENOSYS from the outer filter, which outranks a notification: C libraries fall back to newfstatat.
"""
from __future__ import annotations

import ctypes
import errno
import struct

from builder.sandbox import seccomp
from builder.sandbox.seccomp import JEQ_K, LD_W_ABS, RET_ALLOW, RET_ERRNO, RET_K, Insn, _jump, _stmt

AUDIT_X86_64 = 0xC000003E
SYS_SECCOMP = 317
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
RET_USER_NOTIF = 0x7FC00000
#: a clone proot's tracing options cannot follow: the child would run untranslated, unknown to proot (the
#: step ends without it, and proot's clean-up never kills it): refused with EPERM as namespace flags are
CLONE_UNTRACED = 0x00800000

#: x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl)
UNTRANSLATED = {"renameat2": 316, "execveat": 322, "statx": 332, "io_uring_setup": 425, "io_uring_enter": 426,
                "io_uring_register": 427, "openat2": 437, "faccessat2": 439, "quotactl_fd": 443, "fchmodat2": 452,
                "setxattrat": 463, "getxattrat": 464, "listxattrat": 465, "removexattrat": 466,
                "open_tree_attr": 467, "file_getattr": 468, "file_setattr": 469}
NOTIFIED = {"chown": 92, "fchown": 93, "lchown": 94, "fchownat": 260,
            "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190,
            "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199}
#: the stat calls of the RUN's filter, answered by stat_notify.py
STAT_CALLS = {"stat": 4, "fstat": 5, "lstat": 6, "newfstatat": 262}
NR_NAMES = {nr: name for name, nr in [*NOTIFIED.items(), *STAT_CALLS.items()]}
#: the id calls whose result proot uses to swap ids (fake_id0), and what they return
ID_CALLS = {"getuid": 102, "getgid": 104}
SENTINEL = 0xFFFFFFFE


def program() -> list[Insn]:
    """The filter as BPF instructions (x86_64)."""
    _audit, nr = seccomp.ARCHES["x86_64"]
    eperm, enosys = RET_ERRNO | errno.EPERM, RET_ERRNO | errno.ENOSYS
    p: list[Insn] = [_stmt(LD_W_ABS, 4), _jump(JEQ_K, AUDIT_X86_64, 1, 0), _stmt(RET_K, enosys),
                     _stmt(LD_W_ABS, 0), (0x35, 0, 1, 0x40000000), _stmt(RET_K, enosys)]
    for name in seccomp.REFUSED:
        p += [_jump(JEQ_K, nr[name], 0, 1), _stmt(RET_K, eperm)]
    for number in sorted(set(UNTRANSLATED.values()) | {nr["clone3"]}):
        p += [_jump(JEQ_K, number, 0, 1), _stmt(RET_K, enosys)]
    for number in sorted(ID_CALLS.values()):
        p += [_jump(JEQ_K, number, 0, 1), _stmt(RET_K, RET_ERRNO | (-SENTINEL & 0xFFFFFFFF))]
    p += [_jump(JEQ_K, nr["clone"], 0, 4), _stmt(LD_W_ABS, 16), (0x45, 0, 1, seccomp.CLONE_NS_FLAGS | CLONE_UNTRACED),
          _stmt(RET_K, eperm), _stmt(RET_K, RET_ALLOW)]
    p.append(_stmt(RET_K, RET_ALLOW))
    return p


def run_program() -> list[Insn]:
    """The RUN's own filter (x86_64): owner, xattr and stat calls notified; everything else, other
    ABIs included, is left to the outer filter."""
    p: list[Insn] = [_stmt(LD_W_ABS, 4), _jump(JEQ_K, AUDIT_X86_64, 1, 0), _stmt(RET_K, RET_ALLOW),
                     _stmt(LD_W_ABS, 0)]
    for number in sorted([*NOTIFIED.values(), *STAT_CALLS.values()]):
        p += [_jump(JEQ_K, number, 0, 1), _stmt(RET_K, RET_USER_NOTIF)]
    p.append(_stmt(RET_K, RET_ALLOW))
    return p


def encode(prog: list[Insn]) -> bytes:
    """``prog`` as the kernel reads it (struct sock_filter, native byte order)."""
    return b"".join(struct.pack("=HBBI", *insn) for insn in prog)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def install(prog: list[Insn], listener: bool = False) -> int:
    """Load ``prog`` into this (single-threaded) process; with ``listener``, returns the user
    notification listener fd (close-on-exec), else -1. Needs no_new_privs; OSError when refused."""
    raw = encode(prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = SockFprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    fd = int(_libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER if listener else 0,
                           ctypes.byref(fprog)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER): {errno.errorcode.get(err, err)}")
    return fd if listener else -1
