"""Leases (after containerd's): what a running bale process has written or is about to use,
protected from every other process's garbage collection for as long as it lives.

Each process that touches a store takes one lease::

    STORE/leases/<id>.lease    one line per resource, "KIND VALUE" (blob sha256:..,
                               layer <diff_id hex>, snapshot <driver>/<key>), appended
    STORE/tmp/<id>/            the process's temporary files (Store.tmp_dir)

and holds an exclusive flock on the lease file for its lifetime (children forked to work in the
user namespace share it; an exec'd RUN does not, the fd is close-on-exec). A lease whose flock can
be taken is stale: its process is gone, so its temporary directory and snapshots are leftovers,
and its other entries protect nothing any more.

Ordering with the collector: a resource is recorded *before* it is created or its existence is
checked, under the store's shared lock; the collector reads leases under the exclusive lock. So
either the collector sees the record, or the recorder's check runs after the collection.
A lease file is flocked before it gets its ``.lease`` name (made as ``.new-*``, renamed after
the flock), so a collector never mistakes a lease being born for a stale one.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import StoreError

SUFFIX = ".lease"
NEW_PREFIX = ".new-"
NEW_GRACE_S = 60.0
KINDS = ("blob", "layer", "snapshot")


class Lease:
    """This process's lease on one store (see the module doc). ``record`` is safe from threads
    and from forked children (one ``write`` on an O_APPEND fd per call)."""

    def __init__(self, leases_dir: Path) -> None:
        try:
            leases_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise StoreError(f"cannot take a lease in {leases_dir}: {exc.strerror}") from None
            self._read_only(leases_dir)  # a store this process cannot write: nothing to protect
            return
        for _ in range(10):
            try:
                fd, tmp = tempfile.mkstemp(dir=leases_dir, prefix=NEW_PREFIX)
            except OSError as exc:
                if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise StoreError(f"cannot take a lease in {leases_dir}: {exc.strerror}") from None
                self._read_only(leases_dir)
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.set_inheritable(fd, False)
                flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_APPEND)
                lease_id = f"{int(time.time())}-{os.getpid()}-{secrets.token_hex(4)}"
                path = leases_dir / (lease_id + SUFFIX)
                os.rename(tmp, path)  # FileNotFoundError: a collector took the unlocked .new- file
            except FileNotFoundError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            self.id, self.path, self._fd = lease_id, path, fd
            self._recorded: set[str] = set()
            self._guard = threading.Lock()
            self._pid = os.getpid()
            atexit.register(self.release)
            return
        raise StoreError(f"cannot take a lease in {leases_dir}: its files keep disappearing")

    @property
    def read_only(self) -> bool:
        """True on a store this process cannot write (it records nothing there)."""
        return self._fd < 0 and self.id.startswith("ro-")

    def _read_only(self, leases_dir: Path) -> None:
        self.id, self.path, self._fd = f"ro-{os.getpid()}", leases_dir / "none", -1
        self._recorded = set()
        self._guard = threading.Lock()
        self._pid = os.getpid()

    def record(self, kind: str, *values: str) -> None:
        """Append ``KIND VALUE`` lines for values not recorded yet by this process (nothing on a
        store this process cannot write, where it creates nothing another could collect)."""
        if self._fd < 0:
            return
        with self._guard:
            new = [v for v in values if f"{kind} {v}" not in self._recorded]
            if not new:
                return
            data = "".join(f"{kind} {v}\n" for v in new).encode()
            try:
                os.write(self._fd, data)
            except OSError as exc:
                raise StoreError(f"cannot write the lease {self.path}: {exc.strerror}") from None
            self._recorded.update(f"{kind} {v}" for v in new)

    def release(self) -> None:
        """At a clean exit: remove the process's temp dir and the lease. What cannot be removed
        here (files of subordinate ids) keeps the lease file, for the next collector to finish."""
        if os.getpid() != self._pid or self._fd < 0:
            return
        tmp = self.path.parent.parent / "tmp" / self.id
        shutil.rmtree(tmp, ignore_errors=True)
        if not tmp.exists():
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self._fd)
        self._fd = -1

    def after_fork(self) -> None:
        self._guard = threading.Lock()


@dataclass
class LeaseInfo:
    """A lease file as a collector sees it."""

    id: str
    path: Path
    live: bool
    entries: dict[str, set[str]] = field(default_factory=dict)

    def get(self, kind: str) -> set[str]:
        return self.entries.get(kind, set())


def read_leases(leases_dir: Path, own: str | None = None) -> list[LeaseInfo]:
    """Every lease under ``leases_dir`` but ``own``: live ones (flock held) with their entries,
    stale ones too (entries read, for their snapshots). Call under the store's exclusive lock."""
    out: list[LeaseInfo] = []
    try:
        names = sorted(os.listdir(leases_dir))
    except FileNotFoundError:
        return out
    for name in names:
        if not name.endswith(SUFFIX):
            continue
        lease_id = name[: -len(SUFFIX)]
        if lease_id == own:
            continue
        path = leases_dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            live = not _try_lock(fd)
            data = b""
            while chunk := os.read(fd, 1 << 20):
                data += chunk
        finally:
            os.close(fd)
        info = LeaseInfo(lease_id, path, live)
        for line in data.decode("utf-8", "replace").splitlines():
            kind, _, value = line.partition(" ")
            if kind in KINDS and value:
                info.entries.setdefault(kind, set()).add(value)
        out.append(info)
    return out


def stale_new_files(leases_dir: Path) -> list[Path]:
    """``.new-*`` lease files whose maker died before naming them (unlocked and over a minute old)."""
    out: list[Path] = []
    try:
        names = os.listdir(leases_dir)
    except FileNotFoundError:
        return out
    for name in names:
        if not name.startswith(NEW_PREFIX):
            continue
        path = leases_dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if _try_lock(fd) and time.time() - os.fstat(fd).st_mtime > NEW_GRACE_S:
                out.append(path)
        finally:
            os.close(fd)
    return out


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise


_leases: dict[str, Lease] = {}
_guard = threading.Lock()


def lease_for(store_root: Path) -> Lease:
    """This process's lease on the store at ``store_root``, taken on first use."""
    key = os.path.realpath(store_root)
    with _guard:
        lease = _leases.get(key)
        if lease is None:
            lease = _leases[key] = Lease(Path(store_root) / "leases")
        return lease


def current_lease_id(store_root: Path) -> str | None:
    """The id of this process's lease on the store, None when it has none yet."""
    lease = _leases.get(os.path.realpath(store_root))
    return lease.id if lease else None


def _after_fork_in_child() -> None:
    global _guard
    _guard = threading.Lock()
    for lease in _leases.values():  # the child works for its parent: same lease, same flock
        lease.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def handoff() -> list[tuple[str, str, str, int]]:
    """(store key, lease id, lease path, fd) of each lease this process holds a file for: what a
    worker of the namespace helper needs (the fds sent with SCM_RIGHTS) to record into them."""
    with _guard:
        return [(key, l.id, str(l.path), l._fd) for key, l in _leases.items() if l._fd >= 0]


def adopt(entries: list[tuple[str, str, str, int]]) -> None:
    """In a worker of bale's namespace helper (forked from a process forked from bale, maybe before
    bale took its leases): forget every inherited lease and record into bale's own instead, given
    as ``handoff`` made them with the fds received in this process. The worker never releases them."""
    _leases.clear()
    for key, lease_id, path, fd in entries:
        lease = Lease.__new__(Lease)
        lease.id, lease.path, lease._fd = lease_id, Path(path), fd
        lease._recorded = set()
        lease._guard = threading.Lock()
        lease._pid = -1  # release() is for the process that took it
        _leases[key] = lease
