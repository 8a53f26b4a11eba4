"""bale's side of the ptrace isolation's user notifications (ptrace_filter.run_program, the RUN's
own filter, whose listener landlock_exec's program sends over the handoff socket): the RUN's
chown, fchown, lchown and fchownat calls are answered by recording the owner
(snapshotter/owners.py) on the file inside the rootfs, never by changing it; its calls setting
or removing extended attributes are carried out here, refusing the ``user.bale.`` names that
hold the records (a RUN running as a non-root USER could otherwise claim root's files); its stat
calls are answered with the recorded owners (stat_notify.py).

Safe against a RUN that races: the arguments are read once from its memory (/proc/PID/mem,
checked still valid with SECCOMP_IOCTL_NOTIF_ID_VALID), and the path is opened here (O_PATH) by
the kernel inside the rootfs or the mount holding it, as if that were / (openat2 RESOLVE_IN_ROOT,
stat_notify.StatView.open_file), from the RUN's cwd or dirfd read from /proc/PID; every change
then goes through that fd's /proc link, never walking a path again, so a symlink swapped in
meanwhile cannot turn it to a file of the pod (another snapshot of the store...). The kernel
never runs these calls for the RUN.

Ids: proot's fake_id0 swaps the faked uid and gid of a chown for its own getuid() and getgid(),
which the outer filter makes SENTINEL (ptrace_filter.py): SENTINEL means the faked ids, and a
RUN's chown to bale's own uid or gid number is recorded as named.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import socket
import stat
import threading

from builder.sandbox.ptrace_filter import NR_NAMES, SENTINEL, STAT_CALLS
from builder.sandbox.stat_notify import Root, StatView, read_bytes, read_string
from snapshotter import owners

IOCTL_RECV = 0xC0502100
IOCTL_SEND = 0xC0182101
IOCTL_ID_VALID = 0x40082102
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
PATH_MAX = 4096
XATTR_VALUE_MAX = 65536
RESERVED = "user.bale."


class _Data(ctypes.Structure):
    _fields_ = [("nr", ctypes.c_int), ("arch", ctypes.c_uint32), ("ip", ctypes.c_uint64),
                ("args", ctypes.c_uint64 * 6)]


class _Notif(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("data", _Data)]


class _Resp(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("val", ctypes.c_int64), ("error", ctypes.c_int32),
                ("flags", ctypes.c_uint32)]


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


class Supervisor:
    """Answers the RUN's notifications over ``rootfs`` (a host directory) in a thread of its own,
    until ``stop()`` or until no process of the RUN is left; the listener arrives on ``handoff``
    (taken over: closed when done). ``count``: how many calls it answered."""

    def __init__(self, handoff: socket.socket, rootfs: str, fake: tuple[int, int] = (0, 0),
                 existing: frozenset[int] = frozenset(), binds: tuple[tuple[str, str, bool], ...] = (),
                 private: tuple[tuple[str, str], ...] = ()) -> None:
        """``binds``: the RUN's mounts (guest path, host path, writable); ``private``: proot's other
        binds (guest path, host path: device nodes, the minimal /proc...), whose owners are not
        recorded; ``fake``: the RUN's user; ``existing``: see stat_notify.StatView."""
        self.handoff: socket.socket | None = handoff
        self.fd = -1
        self.view = StatView(rootfs, tuple((g, h, True, w) for g, h, w in binds)
                             + tuple((g, h, False, False) for g, h in private), fake, existing)
        self.fake = fake
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bale-owner-notify", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop answering (after the RUN ended) and close the listener and the socket."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        if self.fd >= 0:
            os.close(self.fd)
        if self.handoff is not None:
            self.handoff.close()
        self.view.close()

    def _loop(self) -> None:
        poller = select.poll()
        assert self.handoff is not None
        poller.register(self.handoff, select.POLLIN)
        while not self._stop.is_set():
            for fd, ev in poller.poll(100):
                if self.handoff is not None and fd == self.handoff.fileno():
                    self._take_listener(poller)
                elif ev & select.POLLIN:
                    self._serve()
                elif ev & (select.POLLHUP | select.POLLERR):
                    return  # every process of the RUN is gone

    def _take_listener(self, poller: select.poll) -> None:
        """The listener, sent once by landlock_exec's program; the socket is done then (or when it
        ends without one: the program failed before, or proot ended)."""
        assert self.handoff is not None
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(self.handoff, 1, 1)
        except OSError:
            fds = []
        poller.unregister(self.handoff)
        self.handoff.close()
        self.handoff = None
        for extra in fds[1:]:
            os.close(extra)
        if fds:
            self.fd = fds[0]
            poller.register(self.fd, select.POLLIN)

    def _serve(self) -> None:
        notif = _Notif()
        try:
            fcntl.ioctl(self.fd, IOCTL_RECV, notif)  # type: ignore[call-overload]
        except OSError:
            return  # the caller died meanwhile (ENOENT), or EINTR: poll again
        try:
            err = self._answer(notif)
        except OSError as exc:
            err = exc.errno or errno.EIO
        except Exception:  # noqa: BLE001 - never leave the RUN hanging
            err = errno.EIO
        resp = _Resp(notif.id, 0, -err if err else 0, 0)
        try:
            fcntl.ioctl(self.fd, IOCTL_SEND, resp)  # type: ignore[call-overload]
        except OSError:
            pass  # the caller died meanwhile
        self.count += 1

    # -- reading the caller ---------------------------------------------------------------------

    def _valid(self, notif: _Notif) -> bool:
        try:
            fcntl.ioctl(self.fd, IOCTL_ID_VALID, ctypes.c_uint64(notif.id))  # type: ignore[call-overload]
            return True
        except OSError:
            return False

    def _read(self, mem: int, addr: int, size: int) -> bytes:
        return read_bytes(mem, addr, size)

    def _string(self, mem: int, addr: int, limit: int = PATH_MAX) -> bytes:
        return read_string(mem, addr, limit)

    def _open(self, pid: int, dirfd: int, path: bytes, follow: bool, empty: bool) -> tuple[int, Root]:
        """An O_PATH fd of the file the caller names (stat_notify.StatView.open_file: inside the
        rootfs or the mount holding it, never walked again) and whether the RUN's own user made it
        there, with its tree; EROFS in a read-only mount, EPERM in bale's private files."""
        root, fd = self.view.open_file(pid, dirfd, path, follow, empty)
        if not root.records or not root.writable:
            os.close(fd)
            raise OSError(errno.EPERM if not root.records else errno.EROFS, "not the RUN's to change")
        return fd, root

    # -- the calls --------------------------------------------------------------------------------

    def _answer(self, notif: _Notif) -> int:
        name = NR_NAMES.get(notif.data.nr)
        args = list(notif.data.args)
        pid = notif.pid
        stats = name in STAT_CALLS
        try:
            mem = os.open(f"/proc/{pid}/mem", (os.O_RDWR if stats else os.O_RDONLY) | os.O_CLOEXEC)
        except OSError:
            return errno.ESRCH  # gone, or not dumpable (proot already fails such a process's calls: EFAULT)
        try:
            if stats:
                # mem opened first, then the check: mem is the caller's, the one waiting for this answer
                if not self._valid(notif):
                    return errno.ESRCH
                return self.view.answer(notif.data.nr, args, pid, mem)
            if name in ("chown", "lchown", "fchownat"):
                if name == "fchownat":
                    dirfd, addr, uid, gid, flags = _s32(args[0]), args[1], args[2], args[3], args[4]
                else:
                    dirfd, addr, uid, gid, flags = AT_FDCWD, args[0], args[1], args[2], 0
                    flags = AT_SYMLINK_NOFOLLOW if name == "lchown" else 0
                path = self._string(mem, addr)
                if not self._valid(notif):
                    return errno.ESRCH
                return self._chown(self._open(pid, dirfd, path, not flags & AT_SYMLINK_NOFOLLOW,
                                              bool(flags & AT_EMPTY_PATH)), *self._unswap(uid, gid))
            if name == "fchown":
                if not self._valid(notif):
                    return errno.ESRCH
                return self._chown(self._open(pid, _s32(args[0]), b"", False, True), *self._unswap(args[1], args[2]))
            if name in ("setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr"):
                return self._xattr(name, pid, mem, notif, args)
            return errno.ENOSYS
        finally:
            os.close(mem)

    def _unswap(self, uid: int, gid: int) -> tuple[int, int]:
        """Undo proot's fake-id swap: its fake_id0 extension replaces the faked uid and gid of a chown
        by what its getuid and getgid returned, SENTINEL (ptrace_filter.py): SENTINEL means the RUN's
        faked ids; every other id, bale's own uid number included, is what the RUN named."""
        uid, gid = uid & 0xFFFFFFFF, gid & 0xFFFFFFFF
        return (self.fake[0] if uid == SENTINEL else uid, self.fake[1] if gid == SENTINEL else gid)

    def _chown(self, opened: tuple[int, Root], uid: int, gid: int) -> int:
        fd, root = opened
        try:
            return self._chown_fd(fd, root, uid, gid)
        finally:
            os.close(fd)

    def _chown_fd(self, fd: int, root: Root, uid: int, gid: int) -> int:
        """Record ``uid``:``gid`` (-1: unchanged) on the file of the O_PATH ``fd``, as chown would."""
        link = f"/proc/self/fd/{fd}"
        st = os.stat(fd)
        # the recorded owner, or the RUN user's for what a non-root RUN made (recorded when it ends)
        old_uid, old_gid = self.view.owner(root, link, st)
        uid, gid = uid & 0xFFFFFFFF, gid & 0xFFFFFFFF
        new = (old_uid if uid == 0xFFFFFFFF else uid, old_gid if gid == 0xFFFFFFFF else gid)
        if self.fake[0] != 0 and (old_uid != self.fake[0] or new[0] != old_uid
                                  or new[1] not in (old_gid, self.fake[1])):
            # a non-root RUN user has no CAP_CHOWN: the kernel's chown_ok/chgrp_ok (its own file, the
            # same uid, its own group; supplementary groups not counted). Was recorded, so USER 1000
            # could give itself a root-owned file and make it set-uid
            return errno.EPERM
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            owners.record_at(link, owners.XATTR, new[0], new[1])
        else:  # the record of a symlink or special file sits on its parent
            pfd, name = self.view.parent(link)
            try:
                owners.record_at(f"/proc/self/fd/{pfd}", owners.CHILD_PREFIX + name, new[0], new[1])
                if stat.S_ISLNK(st.st_mode):  # touch its own ctime, as a chown would
                    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(pfd)
        if stat.S_ISDIR(st.st_mode):
            os.utime(link, ns=(st.st_atime_ns, st.st_mtime_ns))  # its ctime, as a chown would
        elif not stat.S_ISLNK(st.st_mode):
            # as the kernel's chown: set-user-ID always goes, set-group-ID with group execute
            mode = stat.S_IMODE(st.st_mode)
            cleared = mode & ~stat.S_ISUID
            if mode & stat.S_ISGID and mode & stat.S_IXGRP:
                cleared &= ~stat.S_ISGID
            if cleared != mode:
                os.chmod(link, cleared)  # (the fd link is followed: that very file)
        return 0

    def _xattr(self, name: str, pid: int, mem: int, notif: _Notif, args: list[int]) -> int:
        setting = "set" in name
        attr = os.fsdecode(self._string(mem, args[1], 256))
        value = b""
        if setting:
            size = args[3]
            if size > XATTR_VALUE_MAX:
                return errno.E2BIG
            value = self._read(mem, args[2], size) if size else b""
            if len(value) != size:
                return errno.EFAULT
        if not self._valid(notif):
            return errno.ESRCH
        if attr.startswith(RESERVED):
            return errno.EPERM
        if name.startswith("f"):
            fd, _w = self._open(pid, _s32(args[0]), b"", False, True)
        else:
            fd, _w = self._open(pid, AT_FDCWD, self._string(mem, args[0]), not name.startswith("l"), False)
        try:
            link = f"/proc/self/fd/{fd}"  # followed: that very file (user.* on a symlink: EPERM, as the kernel)
            if setting:
                os.setxattr(link, attr, value, int(args[4]) & 0xFFFFFFFF)
            else:
                os.removexattr(link, attr)
        finally:
            os.close(fd)
        return 0

