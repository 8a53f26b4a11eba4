"""The store's reader/writer lock, correct for threads and processes alike.

Between processes it is an flock on ``STORE/lock`` (shared or exclusive). Within one process
every thread goes through one ``StoreLock`` per lock file (``lock_for``), which holds the flock
on the process's behalf: exclusive for one thread at a time, shared for any number, with a
per-thread depth so each thread may re-enter what it holds. A thread holding the exclusive lock
may also take the shared one (it counts as the exclusive); a thread holding only the shared lock
cannot upgrade (``StoreError``: it would have to let go first, so the section would not be atomic).

After ``fork`` the child starts with no lock state of its own: its lock file is opened anew (a new
open file description), so it waits for the parent's exclusive lock like any other process.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Iterator

from builder.errors import StoreError


class StoreLock:
    """Reader/writer lock over ``path`` for the threads of this process; see the module doc."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition(threading.Lock())
        self._fd: int | None = None
        self._writer: int | None = None  # thread ident of the exclusive holder
        self._writer_depth = 0
        self._readers: dict[int, int] = {}  # thread ident -> depth

    def held(self, exclusive: bool = True) -> bool:
        """Whether the calling thread holds the lock (exclusively, when ``exclusive``)."""
        me = threading.get_ident()
        with self._cond:
            return self._writer == me or (not exclusive and me in self._readers)

    @contextlib.contextmanager
    def __call__(self, exclusive: bool = True) -> Iterator[None]:
        self.acquire(exclusive)
        try:
            yield
        finally:
            self.release()

    def acquire(self, exclusive: bool = True) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1
                return
            if me in self._readers:
                if exclusive:
                    raise StoreError(f"store lock {self.path}: a holder of the shared lock asked for the "
                                     "exclusive lock (release it first)")
                self._readers[me] += 1
                return
            if exclusive:
                self._cond.wait_for(lambda: self._writer is None and not self._readers)
                self._flock(fcntl.LOCK_EX)  # no thread of ours holds it: only other processes can delay us
                self._writer, self._writer_depth = me, 1
            else:
                self._cond.wait_for(lambda: self._writer is None)
                if not self._readers:
                    self._flock(fcntl.LOCK_SH)
                self._readers[me] = 1

    def release(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_depth -= 1
                if self._writer_depth == 0:
                    self._writer = None
                    self._unflock()
                    self._cond.notify_all()
                return
            depth = self._readers.get(me)
            if depth is None:
                raise StoreError(f"store lock {self.path}: released by a thread that does not hold it")
            if depth > 1:
                self._readers[me] = depth - 1
                return
            del self._readers[me]
            if not self._readers:
                self._unflock()
                self._cond.notify_all()

    def _flock(self, op: int) -> None:
        if self._fd is None:
            self._fd = _open_lock_file(self.path)
        if self._fd >= 0:
            fcntl.flock(self._fd, op)

    def _unflock(self) -> None:
        if self._fd is not None and self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


def _open_lock_file(path: Path) -> int:
    """The lock file's fd; read-only where this process may not write the store (flock works on
    any fd), -1 where the file is missing and cannot be made (a store nobody has written to)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise StoreError(f"cannot open the store lock {path}: {exc.strerror}") from None
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1
    except OSError as exc:
        raise StoreError(f"cannot open the store lock {path}: {exc.strerror}") from None


_locks: dict[str, StoreLock] = {}
_locks_guard = threading.Lock()


def lock_for(path: Path) -> StoreLock:
    """The one ``StoreLock`` of this process for the lock file ``path``."""
    key = os.path.realpath(path)
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = StoreLock(Path(path))
        return lock


def _after_fork_in_child() -> None:
    global _locks_guard, _locks
    _locks_guard = threading.Lock()
    _locks = {}  # the parent's fds stay open but unused: the child's locks are its own


os.register_at_fork(after_in_child=_after_fork_in_child)
