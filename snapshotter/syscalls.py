"""Linux system calls Python 3.11 lacks (unshare, mount, pivot_root, the new
mount API, mount_setattr), through ctypes. Errors are OSError with the
kernel's own message where the fs-context supplies one."""
from __future__ import annotations

import ctypes
import errno
import os
import platform

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 2

_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
               "fsmount": 432, "mount_setattr": 442},
    "aarch64": {"pivot_root": 41, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
                "fsmount": 432, "mount_setattr": 442},
}
_NR = _SYSCALLS.get(platform.machine(), _SYSCALLS["x86_64"])

FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE = 0, 1, 6
MOVE_MOUNT_F_EMPTY_PATH = 4
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 1, 2, 4, 8
PR_SET_PDEATHSIG = 1


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)), "mount", target)


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_NR["pivot_root"], _b(new_root), _b(put_old)), "pivot_root", new_root)


def sethostname(name: str) -> None:
    data = name.encode()
    _check(_libc.sethostname(data, len(data)), "sethostname")


def set_pdeathsig(sig: int) -> None:
    _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def make_readonly_recursive(path: str, lockdown: bool = True) -> None:
    """mount_setattr(AT_RECURSIVE, RDONLY[|NOSUID|NODEV|NOEXEC]): a remount would change only the top
    mount, and would fail on flags the source mount has locked."""
    bits = MOUNT_ATTR_RDONLY | (MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC if lockdown else 0)
    attr = _MountAttr(bits, 0, 0, 0)
    _check(_libc.syscall(_NR["mount_setattr"], AT_FDCWD, _b(path), AT_RECURSIVE, ctypes.byref(attr),
                         ctypes.sizeof(attr)), "mount_setattr", path)


def _fs_messages(fd: int) -> str:
    out = []
    while True:
        try:
            out.append(os.read(fd, 1024).decode(errors="replace").strip())
        except OSError:
            break
    return "; ".join(m for m in out if m)


def fs_mount(fstype: str, target: str, strings: list[tuple[str, str]], flags: list[str]) -> None:
    """Mount with fsopen/fsconfig/fsmount/move_mount; each (key, value) is set in order
    (``lowerdir+`` may repeat). Errors carry the kernel's fs-context messages."""
    fd = _check(_libc.syscall(_NR["fsopen"], _b(fstype), 0), "fsopen")
    try:
        try:
            for key, value in strings:
                _check(_libc.syscall(_NR["fsconfig"], fd, FSCONFIG_SET_STRING, _b(key), _b(value), 0),
                       f"fsconfig {key}")
            for flag in flags:
                _check(_libc.syscall(_NR["fsconfig"], fd, FSCONFIG_SET_FLAG, _b(flag), None, 0), f"fsconfig {flag}")
            _check(_libc.syscall(_NR["fsconfig"], fd, FSCONFIG_CMD_CREATE, None, None, 0), "fsconfig create")
            mfd = _check(_libc.syscall(_NR["fsmount"], fd, 0, 0), "fsmount")
        except OSError as exc:
            msg = _fs_messages(fd)
            raise OSError(exc.errno, f"{exc.strerror}{': ' + msg if msg else ''}", target) from None
        try:
            _check(_libc.syscall(_NR["move_mount"], mfd, b"", AT_FDCWD, _b(target), MOVE_MOUNT_F_EMPTY_PATH),
                   "move_mount", target)
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


def bring_loopback_up() -> None:
    """ifconfig lo up in the current network namespace (SIOCSIFFLAGS)."""
    import fcntl
    import socket
    import struct
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH14s", b"lo", 0, b"\0" * 14)
        flags = struct.unpack("16sH14s", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b"\0" * 14))


class _FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_ubyte * 128)]


AT_SYMLINK_FOLLOW = 0x400
AT_HANDLE_FID = 0x200


def file_handle(path: str) -> str | None:
    """name_to_handle_at(2) of ``path`` (not followed) as "type:hex", or None where the filesystem has none.

    A handle names one inode for its whole life, generation number included, so unlike an inode
    number it is never handed to a new file (the guarantee NFS relies on). AT_HANDLE_FID (Linux 6.5)
    also covers filesystems that cannot decode handles (overlayfs); older kernels retry without it."""
    for flags in (AT_HANDLE_FID, 0):
        fh = _FileHandle()
        fh.handle_bytes = 128
        mount_id = ctypes.c_int()
        if _libc.name_to_handle_at(AT_FDCWD, _b(path), ctypes.byref(fh), ctypes.byref(mount_id), flags) == 0:
            return f"{fh.handle_type}:{bytes(fh.f_handle[:fh.handle_bytes]).hex()}"
        if ctypes.get_errno() != errno.EINVAL:
            return None
    return None
