"""A tiny static x86_64 program, written here byte by byte, that restricts itself with a Landlock
ruleset and execs its first argument: the RUN's first process under proot (ptrace.py).

Why a program of its own: proot and the RUN's processes share the Landlock domain that bale
gives proot, and proot (Debian's 5.1) must write in the host's /tmp (its temporary files have
that path built in). The RUN must reach neither /tmp nor proot: this program, exec'd by proot
as the RUN's first process, adds a nested domain holding only the RUN's own paths (named as the
RUN sees them: proot translates the opens) with the signal and abstract-socket scopes, so the
RUN can neither signal nor ptrace proot (outside its domain), nor open anything of /tmp, even
through a system call proot does not translate. It needs no libc and no file of the image.

With ``stat_filter`` (ptrace_filter.stat_program), it first installs that seccomp filter with a
listener of its own and hands the listener to bale over the unix socket inherited at
``handoff_fd`` (sendmsg with SCM_RIGHTS: pidfd_getfd is refused by containerd's RuntimeDefault
without CAP_SYS_PTRACE), then closes both: the filter holds for the RUN's processes only, never
for proot (stat_notify.py), and the command never holds either fd.

Layout: one read-write-execute PT_LOAD segment at 0x400000 holding the ELF header, the code and
the data (the filter, its sock_fprog and the handoff's msghdr, iovec and SCM_RIGHTS cmsghdr, the
ruleset attribute, one landlock_path_beneath_attr and one path per rule, the error message).
Code, in order: with a filter, seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER), sendmsg of the
listener, close of the listener and of the socket; landlock_create_ruleset; per rule
open(path, O_PATH|O_CLOEXEC) (a missing path is skipped) and landlock_add_rule;
landlock_restrict_self; execve of the command
and environment held in the data (so proot itself runs with an environment of bale's, and the
RUN's ENV, LD_PRELOAD or PROOT_* included, reaches the RUN only). A failure before the exec writes one
line to stderr and exits 126; a failed execve says so and exits 127.
"""
from __future__ import annotations

import struct

BASE = 0x400000
EHDR, PHDR = 64, 56
O_PATH_CLOEXEC = 0x200000 | 0x80000
SYS_OPEN, SYS_WRITE, SYS_GETPID, SYS_EXECVE, SYS_EXIT_GROUP = 2, 1, 39, 59, 231
SYS_CLOSE, SYS_SENDMSG, SYS_SECCOMP = 3, 46, 317
SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER = 1, 8
SOL_SOCKET, SCM_RIGHTS = 1, 1
SYS_CREATE, SYS_ADD_RULE, SYS_RESTRICT = 444, 445, 446
MESSAGE = b"bale: cannot restrict the RUN with Landlock\n"
EXEC_MESSAGE = b"bale: cannot run the RUN's command (execve failed)\n"


class _Asm:
    """Just enough of an x86_64 assembler: bytes, with rip-relative fix-ups to data labels and
    32-bit jumps to code labels resolved at the end."""

    def __init__(self) -> None:
        self.code = bytearray()
        self.fix_data: list[tuple[int, str]] = []  # (offset of disp32, data label)
        self.fix_code: list[tuple[int, str]] = []
        self.labels: dict[str, int] = {}

    def emit(self, raw: bytes) -> None:
        self.code += raw

    def rip(self, prefix: bytes, label: str) -> None:
        """An instruction ending in a rip-relative disp32 to data ``label``."""
        self.code += prefix
        self.fix_data.append((len(self.code), label))
        self.code += b"\0\0\0\0"

    def jump(self, opcode: bytes, label: str) -> None:
        self.code += opcode
        self.fix_code.append((len(self.code), label))
        self.code += b"\0\0\0\0"

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def syscall_nr(self, nr: int) -> None:
        self.emit(b"\xb8" + struct.pack("<I", nr) + b"\x0f\x05")  # mov eax, nr; syscall

    def check(self, on_negative: str) -> None:
        self.emit(b"\x48\x85\xc0")  # test rax, rax
        self.jump(b"\x0f\x88", on_negative)  # js


def build(rules: list[tuple[str, int]], handled_fs: int, scoped: int, path: bytes, argv: list[bytes],
          envp: list[bytes], handled_net: int = 0, stat_filter: bytes = b"", handoff_fd: int = -1) -> bytes:
    """The program for ``rules`` ((path as the RUN names it, Landlock rights); a directory's rights
    hold beneath it) with ``handled_fs`` handled and the ``scoped`` flags, then exec'ing ``argv``
    at ``path`` (as the RUN names it) with the environment ``envp`` (b"NAME=value"),
    both held in the program itself: ELF bytes. ``handled_net``: the network rights handled (with no
    network rule: refused; landlock.NET_TCP for --network=none). ``stat_filter``: BPF instructions
    (struct sock_filter bytes) installed first, their listener sent over the unix socket at fd
    ``handoff_fd`` (see above). ValueError for an empty argv, a NUL byte, or a filter without fd."""
    if not argv or any(b"\0" in s for s in [path, *argv, *envp]):
        raise ValueError("argv and environment must be non-empty strings without NUL bytes")
    if stat_filter and (handoff_fd < 0 or len(stat_filter) % 8):
        raise ValueError("a stat filter needs whole instructions and a handoff fd")
    a = _Asm()
    data = bytearray()
    places: dict[str, int] = {}
    pointers: list[tuple[int, str]] = []  # (offset in data of a u64, label it points to)

    def put(label: str, raw: bytes, align: int = 8) -> None:
        while len(data) % align:
            data.append(0)
        places[label] = len(data)
        data.extend(raw)

    put("attr", struct.pack("<QQQ", handled_fs, handled_net, scoped))
    put("msg", MESSAGE)
    put("xmsg", EXEC_MESSAGE)
    # a first harmless call: proot may still be finishing the execve when the program starts
    a.syscall_nr(SYS_GETPID)
    if stat_filter:
        put("filter", stat_filter)
        put("fprog", struct.pack("<HxxxxxxQ", len(stat_filter) // 8, 0))
        pointers.append((places["fprog"] + 8, "filter"))
        put("byte", b"S")
        put("iov", struct.pack("<QQ", 0, 1))
        pointers.append((places["iov"], "byte"))
        put("cmsg", struct.pack("<QiiiI", 20, SOL_SOCKET, SCM_RIGHTS, -1, 0))  # CMSG_LEN(4), CMSG_SPACE(4) = 24
        put("msghdr", struct.pack("<QIxxxxQQQQixxxx", 0, 0, 0, 1, 0, 24, 0))
        pointers += [(places["msghdr"] + 16, "iov"), (places["msghdr"] + 32, "cmsg")]
        # r13 = seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog)
        a.emit(b"\xbf" + struct.pack("<I", SECCOMP_SET_MODE_FILTER))  # mov edi, 1
        a.emit(b"\xbe" + struct.pack("<I", SECCOMP_FILTER_FLAG_NEW_LISTENER))  # mov esi, 8
        a.rip(b"\x48\x8d\x15", "fprog")  # lea rdx, [rip+fprog]
        a.syscall_nr(SYS_SECCOMP)
        a.check("fail")
        a.emit(b"\x49\x89\xc5")  # mov r13, rax
        # sendmsg(handoff_fd, &msghdr, 0), the listener in the SCM_RIGHTS message
        a.rip(b"\x44\x89\x2d", "cmsg+16")  # mov [rip+cmsg.fd], r13d
        a.emit(b"\xbf" + struct.pack("<I", handoff_fd))  # mov edi, fd
        a.rip(b"\x48\x8d\x35", "msghdr")  # lea rsi, [rip+msghdr]
        a.emit(b"\x31\xd2")  # xor edx, edx
        a.syscall_nr(SYS_SENDMSG)
        a.check("fail")
        # close(r13); close(handoff_fd)
        a.emit(b"\x4c\x89\xef")  # mov rdi, r13
        a.syscall_nr(SYS_CLOSE)
        a.emit(b"\xbf" + struct.pack("<I", handoff_fd))  # mov edi, fd
        a.syscall_nr(SYS_CLOSE)
    # landlock_create_ruleset(&attr, 24, 0) -> r12
    a.rip(b"\x48\x8d\x3d", "attr")  # lea rdi, [rip+attr]
    a.emit(b"\xbe" + struct.pack("<I", 24))  # mov esi, 24
    a.emit(b"\x31\xd2")  # xor edx, edx
    a.syscall_nr(SYS_CREATE)
    a.check("fail")
    a.emit(b"\x49\x89\xc4")  # mov r12, rax
    for i, (rule_path, rights) in enumerate(rules):
        put(f"path{i}", rule_path.encode() + b"\0", 1)
        put(f"rule{i}", struct.pack("<Qi", rights, -1), 8)
        # fd = open(path, O_PATH|O_CLOEXEC); a missing path is skipped
        a.rip(b"\x48\x8d\x3d", f"path{i}")  # lea rdi, [rip+path]
        a.emit(b"\xbe" + struct.pack("<I", O_PATH_CLOEXEC))  # mov esi, flags
        a.emit(b"\x31\xd2")  # xor edx, edx
        a.syscall_nr(SYS_OPEN)
        a.check(f"skip{i}")
        a.rip(b"\x89\x05", f"rule{i}+8")  # mov [rip+rule.parent_fd], eax
        # landlock_add_rule(r12, LANDLOCK_RULE_PATH_BENEATH, &rule, 0)
        a.emit(b"\x4c\x89\xe7")  # mov rdi, r12
        a.emit(b"\xbe\x01\x00\x00\x00")  # mov esi, 1
        a.rip(b"\x48\x8d\x15", f"rule{i}")  # lea rdx, [rip+rule]
        a.emit(b"\x45\x31\xd2")  # xor r10d, r10d
        a.syscall_nr(SYS_ADD_RULE)
        a.check("fail")
        a.label(f"skip{i}")
    # landlock_restrict_self(r12, 0)
    a.emit(b"\x4c\x89\xe7")  # mov rdi, r12
    a.emit(b"\x31\xf6")  # xor esi, esi
    a.syscall_nr(SYS_RESTRICT)
    a.check("fail")
    # execve(path, argv, envp), all in the data
    for kind, strings in (("arg", argv), ("env", envp)):
        for i, raw in enumerate(strings):
            put(f"{kind}{i}", raw + b"\0", 1)
        put(f"{kind}v", b"\0" * 8 * (len(strings) + 1))
        for i in range(len(strings)):
            pointers.append((places[f"{kind}v"] + 8 * i, f"{kind}{i}"))
    put("exe", path + b"\0", 1)
    a.rip(b"\x48\x8d\x3d", "exe")  # lea rdi, [rip+exe]
    a.rip(b"\x48\x8d\x35", "argv")  # lea rsi, [rip+argv]
    a.rip(b"\x48\x8d\x15", "envv")  # lea rdx, [rip+envv]
    a.syscall_nr(SYS_EXECVE)
    for label, message, code in (("execfail", "xmsg", 127), ("fail", "msg", 126)):  # execve falls through
        a.label(label)
        a.emit(b"\xbf\x02\x00\x00\x00")  # mov edi, 2
        a.rip(b"\x48\x8d\x35", message)  # lea rsi, [rip+message]
        a.emit(b"\xba" + struct.pack("<I", len(MESSAGE if message == "msg" else EXEC_MESSAGE)))  # mov edx, len
        a.syscall_nr(SYS_WRITE)
        a.emit(b"\xbf" + struct.pack("<I", code))  # mov edi, code
        a.syscall_nr(SYS_EXIT_GROUP)

    code_off = EHDR + PHDR
    data_off = code_off + len(a.code)
    data_off += (-data_off) % 16
    for at, name in a.fix_code:
        struct.pack_into("<i", a.code, at, a.labels[name] - (at + 4))
    for at, ref in a.fix_data:
        name, _, extra = ref.partition("+")
        target = data_off + places[name] + int(extra or 0)
        struct.pack_into("<i", a.code, at, target - (code_off + at + 4))
    for at, name in pointers:
        struct.pack_into("<Q", data, at, BASE + data_off + places[name])
    body = bytes(a.code) + b"\0" * (data_off - code_off - len(a.code)) + bytes(data)
    size = code_off + len(body)
    ehdr = (b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
            + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, BASE + code_off, EHDR, 0, 0, EHDR, PHDR, 1, 0, 0, 0))
    phdr = struct.pack("<IIQQQQQQ", 1, 7, 0, BASE, BASE, size, size, 0x1000)
    return ehdr + phdr + body
