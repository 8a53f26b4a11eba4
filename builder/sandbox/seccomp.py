"""A seccomp filter for RUN, written as classic BPF with ctypes (no library: the
program is a list of compare-and-return pairs, short enough to read whole here).

What it refuses (EPERM), in every isolation:
  the mount API (mount, umount2, pivot_root, fsopen/fsconfig/fsmount/fspick, move_mount, open_tree,
  mount_setattr), new namespaces (unshare, setns, clone with any CLONE_NEW* flag; clone3 gives ENOSYS
  so libcs fall back to clone), kexec, bpf, kernel modules, reboot, swap, keyrings, userfaultfd,
  perf_event_open, open_by_handle_at/name_to_handle_at, clock and time setting, syslog, iopl/ioperm,
  acct, quotactl, kcmp, pidfd_getfd, vhangup — Docker's default profile refuses the same to a
  container without CAP_SYS_ADMIN (moby profiles/seccomp/default.json).
With ``strict`` (chroot isolation, where the RUN shares bale's pid namespace and root):
  also chroot (the double-chroot escape), ptrace, process_vm_readv/writev, and kill/tkill/tgkill/
  pidfd_open aimed at any of ``protect`` (bale's pid, and -pgid) or at -1.
System calls of another ABI (x32, i386 on x86_64) get ENOSYS: their numbers differ, so the table
would not hold for them.
"""
from __future__ import annotations

import ctypes
import errno
import platform
import struct

from builder.sandbox.kernel import _prctl

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

# BPF opcodes
LD_W_ABS = 0x20
JEQ_K = 0x15
JSET_K = 0x45
RET_K = 0x06
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000

CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

#: audit arch, syscall numbers by name (x86_64 from arch/x86/entry/syscalls/syscall_64.tbl,
#: aarch64 from include/uapi/asm-generic/unistd.h)
ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (0xC000003E, {
        "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
        "clone": 56, "clone3": 435, "kexec_load": 246, "kexec_file_load": 320, "bpf": 321, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "open_by_handle_at": 304, "name_to_handle_at": 303,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "reboot": 169, "swapon": 167,
        "swapoff": 168, "keyctl": 250, "add_key": 248, "request_key": 249, "userfaultfd": 323,
        "perf_event_open": 298, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "move_mount": 429, "open_tree": 428, "mount_setattr": 442, "acct": 163, "settimeofday": 164,
        "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159, "syslog": 103, "iopl": 172, "ioperm": 173,
        "quotactl": 179, "kcmp": 312, "pidfd_getfd": 438, "vhangup": 153, "kill": 62, "tkill": 200,
        "tgkill": 234, "pidfd_open": 434}),
    "aarch64": (0xC00000B7, {
        "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268,
        "clone": 220, "clone3": 435, "kexec_load": 104, "kexec_file_load": 294, "bpf": 280, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "open_by_handle_at": 265, "name_to_handle_at": 264,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "reboot": 142, "swapon": 224,
        "swapoff": 225, "keyctl": 219, "add_key": 217, "request_key": 218, "userfaultfd": 282,
        "perf_event_open": 241, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "move_mount": 429, "open_tree": 428, "mount_setattr": 442, "acct": 89, "settimeofday": 170,
        "clock_settime": 112, "clock_adjtime": 266, "adjtimex": 171, "syslog": 116, "quotactl": 60,
        "kcmp": 272, "pidfd_getfd": 438, "vhangup": 58, "kill": 129, "tkill": 130, "tgkill": 131,
        "pidfd_open": 434}),
}

REFUSED = ("mount", "umount2", "pivot_root", "unshare", "setns", "kexec_load", "kexec_file_load", "bpf",
           "open_by_handle_at", "name_to_handle_at", "init_module", "finit_module", "delete_module", "reboot",
           "swapon", "swapoff", "keyctl", "add_key", "request_key", "userfaultfd", "perf_event_open", "fsopen",
           "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "acct", "settimeofday",
           "clock_settime", "clock_adjtime", "adjtimex", "syslog", "iopl", "ioperm", "quotactl", "kcmp",
           "pidfd_getfd", "vhangup")
REFUSED_STRICT = ("chroot", "ptrace", "process_vm_readv", "process_vm_writev")
#: signal calls whose first argument names the target (kill: pid or -pgid; tkill: tid; tgkill: tgid)
SIGNAL_CALLS = ("kill", "tkill", "tgkill", "pidfd_open")

Insn = tuple[int, int, int, int]


def _stmt(code: int, k: int) -> Insn:
    return (code, 0, 0, k & 0xFFFFFFFF)


def _jump(code: int, k: int, jt: int, jf: int) -> Insn:
    return (code, jt, jf, k & 0xFFFFFFFF)


def program(strict: bool = False, protect: tuple[int, ...] = (), arch: str | None = None) -> list[Insn]:
    """The filter as BPF instructions (code, jt, jf, k); ValueError on an unknown architecture."""
    arch = arch or platform.machine()
    if arch not in ARCHES:
        raise ValueError(f"no seccomp table for {arch}")
    audit, nr = ARCHES[arch]
    eperm, enosys = RET_ERRNO | errno.EPERM, RET_ERRNO | errno.ENOSYS
    p: list[Insn] = [_stmt(LD_W_ABS, 4), _jump(JEQ_K, audit, 1, 0), _stmt(RET_K, enosys), _stmt(LD_W_ABS, 0)]
    if arch == "x86_64":  # x32 calls carry bit 30
        p += [(0x35, 0, 1, 0x40000000), _stmt(RET_K, enosys)]  # JGE
    for name in REFUSED + (REFUSED_STRICT if strict else ()):
        if name in nr:
            p += [_jump(JEQ_K, nr[name], 0, 1), _stmt(RET_K, eperm)]
    p += [_jump(JEQ_K, nr["clone3"], 0, 1), _stmt(RET_K, enosys)]
    # clone(flags, ...): refused when flags carry a namespace flag
    p += [_jump(JEQ_K, nr["clone"], 0, 4), _stmt(LD_W_ABS, 16), _jump(JSET_K, CLONE_NS_FLAGS, 0, 1),
          _stmt(RET_K, eperm), _stmt(RET_K, RET_ALLOW)]
    if strict:
        targets = sorted({t & 0xFFFFFFFF for t in protect} | {0xFFFFFFFF})
        for name in SIGNAL_CALLS:
            # JEQ nr; LD arg0; (JEQ target -> refuse)*; ALLOW; refuse
            n = len(targets)
            p += [_jump(JEQ_K, nr[name], 0, n + 3), _stmt(LD_W_ABS, 16)]
            for i, t in enumerate(targets):
                p.append(_jump(JEQ_K, t, n - i, 0))
            p += [_stmt(RET_K, RET_ALLOW), _stmt(RET_K, eperm)]
    p.append(_stmt(RET_K, RET_ALLOW))
    return p


def install(strict: bool = False, protect: tuple[int, ...] = ()) -> None:
    """Load the filter into this thread (inherited by exec and children). Needs no_new_privs or
    CAP_SYS_ADMIN in the current user namespace; OSError if the kernel refuses it."""
    prog = program(strict, protect)
    raw = b"".join(struct.pack("=HBBI", *insn) for insn in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = SockFprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, "prctl(PR_SET_SECCOMP)", ctypes.addressof(fprog))


def oci_profile(arch: str | None = None) -> dict[str, object]:
    """The same filter (non-strict) as an OCI runtime-spec ``linux.seccomp`` section for runc."""
    arch = arch or platform.machine()
    oci_arch = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}.get(arch)
    if oci_arch is None:
        raise ValueError(f"no seccomp table for {arch}")
    syscalls: list[dict[str, object]] = [
        {"names": list(REFUSED), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
    ]
    for bit in range(32):  # clone with any namespace flag: one masked compare per flag
        flag = 1 << bit
        if CLONE_NS_FLAGS & flag:
            syscalls.append({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
                             "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]})
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [oci_arch], "syscalls": syscalls}
