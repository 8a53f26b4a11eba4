"""bale's answers to the RUN's stat calls in the ptrace isolation (ptrace_filter.stat_program, the
RUN's own filter: stat, fstat, lstat, newfstatat), so the RUN sees the owners its layer will get:

* a file of the rootfs or of a RUN mount: its recorded owner (snapshotter/owners.py); without a
  record, bale's files are root's, except what a RUN with a non-root USER made during the step
  (an inode not in ``existing``, in the rootfs or a writable mount): that user's, as it will be;
* the minimal /proc and /etc copies and the heredoc pipes bale binds in: root's, as in Docker;
* anything else the RUN reaches (the device nodes, its pipes and sockets): its real owner, bale's
  uid shown as the faked user (what proot's fake_id0 showed).

Everything the caller gives is hostile: the path and the stat buffer are read from and written to
/proc/PID/mem, opened before SECCOMP_IOCTL_NOTIF_ID_VALID confirms the notification is still
pending (so the memory is the caller's, never another process's); a bad pointer answers EFAULT.
Paths arrive as proot translated them (host paths: proot stops every call at its entry before
seccomp runs) or, were proot to skip one, as the RUN named them; either way they are resolved by
the kernel inside the rootfs or the bind holding them (openat2 with RESOLVE_IN_ROOT, O_PATH), so
neither a symlink nor a racing rename reaches a file of the pod the RUN cannot see: what lies
outside answers ENOENT. Errors are the kernel's own (ENOENT, ENOTDIR, ELOOP, EACCES...).
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct

from snapshotter import owners

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_NO_AUTOMOUNT = 0x800
AT_EMPTY_PATH = 0x1000
PATH_MAX = 4096
SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS, RESOLVE_IN_ROOT = 0x02, 0x10
O_PATH = 0o10000000
#: x86_64 struct stat (arch/x86/include/uapi/asm/stat.h): dev, ino, nlink; mode, uid, gid, pad;
#: rdev, size, blksize, blocks; atime, mtime, ctime (seconds, nanoseconds); 3 reserved
STAT = struct.Struct("<QQQIIIiQqqqqqqqqq24x")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def read_bytes(mem: int, addr: int, size: int) -> bytes:
    """``size`` bytes at ``addr`` of the caller's memory (``mem``: its /proc/PID/mem); EFAULT."""
    try:
        return os.pread(mem, size, addr)
    except (OSError, OverflowError):
        raise OSError(errno.EFAULT, "bad address") from None


def read_string(mem: int, addr: int, limit: int = PATH_MAX) -> bytes:
    """The NUL-terminated string at ``addr`` (without the NUL); EFAULT, ENAMETOOLONG past ``limit``."""
    out = b""
    while len(out) < limit:
        chunk = read_bytes(mem, addr + len(out), min(4096 - (addr + len(out)) % 4096, limit - len(out)))
        if not chunk:
            raise OSError(errno.EFAULT, "bad address")
        nul = chunk.find(b"\0")
        if nul >= 0:
            return out + chunk[:nul]
        out += chunk
    raise OSError(errno.ENAMETOOLONG, "path too long")


_HOW = {follow: _OpenHow(O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW), 0,
                         RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) for follow in (False, True)}


def open_in(base: int, rel: str, follow: bool) -> int:
    """An O_PATH fd of ``rel`` resolved inside directory fd ``base`` as if it were / (the kernel's
    RESOLVE_IN_ROOT: '..' and absolute symlinks stay inside); the final symlink not followed
    unless ``follow``. OSError with the kernel's errno."""
    how = _HOW[follow]
    fd = int(_libc.syscall(SYS_OPENAT2, base, os.fsencode(rel or "."), ctypes.byref(how), 24))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def pack(st: os.stat_result, uid: int, gid: int) -> bytes:
    """``st`` as the kernel's x86_64 struct stat (144 bytes), with ``uid``:``gid`` as its owner."""
    times: list[int] = []
    for ns in (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns):
        times += divmod(ns, 1_000_000_000)
    return STAT.pack(st.st_dev, st.st_ino, st.st_nlink, st.st_mode, uid & 0xFFFFFFFF, gid & 0xFFFFFFFF, 0,
                     st.st_rdev, st.st_size, st.st_blksize, st.st_blocks, *times)


def _record(at: str, name: str) -> tuple[int, int]:
    """The record ``name`` (owners.py) of the file ``at`` (a /proc fd link: followed, so no path
    is walked again); 0:0 without one. The owner may have taken its read bit away (needed for
    user.* xattrs): then set for the call only, as owners.py does."""
    try:
        raw = os.getxattr(at, name)
    except PermissionError:
        try:
            mode = stat.S_IMODE(os.stat(at).st_mode)
            os.chmod(at, mode | stat.S_IRUSR)
            try:
                raw = os.getxattr(at, name)
            finally:
                os.chmod(at, mode)
        except OSError:
            return 0, 0
    except OSError:
        return 0, 0
    return owners.parse_record(raw)


class Root:
    """One tree the RUN sees: ``host`` shown at ``guest``; ``records``: its owners are bale's records
    (the rootfs, RUN mounts), else real owners; ``writable``: a RUN may make files in it."""

    def __init__(self, guest: str, host: str, records: bool, writable: bool) -> None:
        self.guest = os.path.normpath("/" + guest.lstrip("/"))
        self.host = os.path.realpath(host)
        self.records = records
        self.writable = writable
        self.is_dir = os.path.isdir(self.host)
        self.fd = os.open(self.host, O_PATH | os.O_CLOEXEC | (os.O_DIRECTORY if self.is_dir else 0))

    def close(self) -> None:
        os.close(self.fd)


class StatView:
    """The RUN's view for its stat calls: the rootfs and every proot bind (``binds``: (guest path,
    host path, records, writable)); ``fake``: the RUN's user; ``existing``: inodes before a non-root
    RUN (see the module's rules)."""

    def __init__(self, rootfs: str, binds: tuple[tuple[str, str, bool, bool], ...], fake: tuple[int, int],
                 existing: frozenset[int]) -> None:
        self.roots = [Root(g, h, r, w) for g, h, r, w in binds if os.path.lexists(h)]
        self.roots.sort(key=lambda r: -len(r.guest))
        self.rootfs = Root("/", rootfs, True, True)
        self.by_host = sorted([*self.roots, self.rootfs], key=lambda r: -len(r.host))
        self.fake = fake
        self.existing = existing
        self.real = (os.getuid(), os.getgid())

    def close(self) -> None:
        for r in [*self.roots, self.rootfs]:
            r.close()

    # -- resolution ------------------------------------------------------------------------------

    def _of_host(self, host: str) -> tuple[Root, str] | None:
        """(tree, path inside it) of a host path proot translated, None when it is in none."""
        for r in self.by_host:
            if host == r.host or host.startswith(r.host + "/"):
                return r, host[len(r.host):]
        return None

    def _of_guest(self, guest: str) -> tuple[Root, str]:
        """(tree, path inside it) of a path as the RUN names it (the bind holding it, else the rootfs)."""
        norm = os.path.normpath("/" + guest.lstrip("/"))
        for r in self.roots:
            if norm == r.guest or norm.startswith(r.guest.rstrip("/") + "/"):
                return r, norm[len(r.guest):]
        return self.rootfs, guest

    def _open(self, where: tuple[Root, str], follow: bool) -> tuple[Root, int]:
        r, rel = where
        rel = rel.lstrip("/")
        if not r.is_dir:
            if rel:
                raise OSError(errno.ENOTDIR, "not a directory")
            return r, os.open(r.host, O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
        return r, open_in(r.fd, rel, follow)

    def _base(self, pid: int, dirfd: int) -> tuple[Root, str]:
        """The tree and path of the caller's cwd or directory fd (relative paths proot left alone)."""
        link = f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}"
        try:
            host = os.readlink(link)
        except OSError:
            raise OSError(errno.EBADF, "bad fd") from None
        where = self._of_host(host)
        if where is None:
            raise OSError(errno.ENOENT if dirfd == AT_FDCWD else errno.ENOTDIR, "outside the RUN's view")
        return where

    def open_file(self, pid: int, dirfd: int, path: bytes, follow: bool, empty: bool) -> tuple[Root, int]:
        """The tree holding the file the caller ``pid`` names and an O_PATH fd of it (the caller
        closes it): ``path`` (proot's translation or the RUN's own) from ``dirfd`` (AT_FDCWD: its
        cwd), the final symlink followed when ``follow``; an empty path with ``empty``
        (AT_EMPTY_PATH, fchown) is the caller's open file ``dirfd`` itself. EPERM for an open file
        outside every tree (a pipe), the kernel's errno otherwise."""
        if not path:
            if not empty:
                raise OSError(errno.ENOENT, "empty path")
            link = f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}"
            try:
                fd = os.open(link, O_PATH | os.O_CLOEXEC)  # the magic link leads to the open file itself
            except OSError:
                raise OSError(errno.EBADF, "bad fd") from None
            try:
                where = self._of_host(os.readlink(f"/proc/self/fd/{fd}"))
                if where is None:
                    raise OSError(errno.EPERM, "outside the RUN's files")
            except BaseException:
                os.close(fd)
                raise
            return where[0], fd
        text = os.fsdecode(path)
        if text.startswith("/"):
            where = self._of_host(text) or self._of_guest(text)
        else:
            base, rel = self._base(pid, dirfd)
            where = base, rel + "/" + text
        return self._open(where, follow)

    def parent(self, at: str) -> tuple[int, str]:
        """An O_PATH fd of the directory holding the file the fd link ``at`` leads to, opened inside
        its tree, and the file's name there (the caller closes the fd); ENOENT outside the trees."""
        where = self._of_host(os.readlink(at))
        rel = where[1].rstrip("/") if where is not None and where[0].is_dir else ""
        if where is None or "/" not in rel:
            raise OSError(errno.ENOENT, "no parent inside the RUN's files")
        parent, name = rel.rsplit("/", 1)
        return open_in(where[0].fd, parent, True), name

    # -- the answer ------------------------------------------------------------------------------

    def answer(self, nr: int, args: list[int], pid: int, mem: int) -> int:
        """Answer stat call ``nr`` (x86_64) with ``args`` of process ``pid`` (``mem``: its
        /proc/PID/mem, the notification checked valid after it was opened): 0 after writing the
        struct stat, else the errno the kernel would give."""
        try:
            return self._answer(nr, args, pid, mem)
        except OSError as exc:
            return exc.errno or errno.EIO

    def _answer(self, nr: int, args: list[int], pid: int, mem: int) -> int:
        if nr == 5:  # fstat(fd, buf)
            return self._fd(pid, ctypes.c_int32(args[0]).value, mem, args[1])
        if nr in (4, 6):  # stat, lstat (path, buf)
            dirfd, addr, buf, flags = AT_FDCWD, args[0], args[1], AT_SYMLINK_NOFOLLOW if nr == 6 else 0
        else:  # newfstatat(dirfd, path, buf, flags)
            dirfd, addr, buf, flags = ctypes.c_int32(args[0]).value, args[1], args[2], args[3] & 0xFFFFFFFF
            if flags & ~(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH):
                return errno.EINVAL
        path = read_string(mem, addr) if addr or not flags & AT_EMPTY_PATH else b""
        if not path:
            if not flags & AT_EMPTY_PATH:
                return errno.ENOENT
            return self._fd(pid, dirfd, mem, buf)
        r, fd = self.open_file(pid, dirfd, path, not flags & AT_SYMLINK_NOFOLLOW, False)
        try:
            st = os.stat(fd)
            uid, gid = self.owner(r, f"/proc/self/fd/{fd}", st)
        finally:
            os.close(fd)
        return self._write(mem, buf, pack(st, uid, gid))

    def _fd(self, pid: int, fd: int, mem: int, buf: int) -> int:
        """fstat of the caller's ``fd`` (through /proc/PID/fd: the caller's own open file)."""
        link = f"/proc/{pid}/fd/{fd}"
        try:
            st = os.stat(link)
            target = os.readlink(link)
        except OSError:
            return errno.EBADF
        where = self._of_host(target) if target.startswith("/") else None
        if where is None:
            uid, gid = self._shown(st)
        else:
            uid, gid = self.owner(where[0], link, st)
        return self._write(mem, buf, pack(st, uid, gid))

    def owner(self, r: Root, at: str, st: os.stat_result) -> tuple[int, int]:
        """The owner the RUN sees for ``st`` in tree ``r``; ``at``: a /proc fd link to that very file
        (followed: no path is walked again; the record of a symlink or special file sits on its
        parent, opened inside the tree)."""
        if not r.records:  # bale's private files (the /proc and /etc copies, the heredoc pipes): root's, as in Docker
            return (0 if st.st_uid == self.real[0] else st.st_uid, 0 if st.st_gid == self.real[1] else st.st_gid)
        if (st.st_uid, st.st_gid) != self.real:
            return st.st_uid, st.st_gid
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            owner = _record(at, owners.XATTR)
        else:
            owner = (0, 0)
            try:
                pfd, name = self.parent(at)
                try:
                    owner = _record(f"/proc/self/fd/{pfd}", owners.CHILD_PREFIX + name)
                finally:
                    os.close(pfd)
            except OSError:
                pass
        if owner == (0, 0) and self.fake[0] != 0 and r.writable and st.st_ino not in self.existing:
            return self.fake  # made by this RUN without a record: its user's when it ends (0:0 is never recorded)
        return owner

    def _shown(self, st: os.stat_result) -> tuple[int, int]:
        """A file outside the records: its real owner, bale's ids shown as the faked user's."""
        return (self.fake[0] if st.st_uid == self.real[0] else st.st_uid,
                self.fake[1] if st.st_gid == self.real[1] else st.st_gid)

    def _write(self, mem: int, addr: int, data: bytes) -> int:
        try:
            return 0 if os.pwrite(mem, data, addr) == len(data) else errno.EFAULT
        except (OSError, OverflowError):
            return errno.EFAULT
