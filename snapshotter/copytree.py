"""Copy planned entries from source directories straight into a destination
directory: the direct path of a COPY (no tar in between), run where the
snapshot is mounted (inside the user namespace when rootless).

The plan is a sequence of ``Item`` records, each naming one entry by a source
root (a directory), a path relative to that root, and the path it takes under
the destination directory, in walk order (a directory before what it holds).
Both trees are reached through directory file descriptors opened one level
at a time with ``O_NOFOLLOW`` (no joined paths, whatever the depth), so a
symlink in a source tree is copied as a symlink and never followed, and a
symlink met on the destination side is resolved inside the destination
directory (``safepath.secure_join`` semantics, as ``apply_tar`` resolves it).

What lands is what ``apply_tar`` makes of the equivalent tar (the tar path is
kept for ADD archives and URLs): a directory already there is kept (its
metadata replaced), anything else already there is removed first; hard links
within one plan stay hard links; owners are the --chown owner, else the
source's (``keep_owner``) or 0:0; modes are the forced mode (not for symlinks
or hard links) or the source's; times are the forced mtime (whole seconds) or
the source's (nanoseconds), directories' set last; extended attributes are
copied except overlay's own and SELinux labels, and one that cannot be set is
a warning. FIFOs are made as FIFOs, device nodes as device nodes (an error
when that is refused); sockets are skipped, or made empty regular files
(``socket_files``: COPY --from, as fsutil's copyDevice makes them). Every source entry's type is
checked with ``lstat`` before it is opened, and again on the opened fd.

Contents move in the kernel: FICLONE (a reflink) where the filesystem shares
extents, else ``copy_file_range``, else ``sendfile``, else reads and writes.
Files of POOLED bytes or more go to a small thread pool (their copies are
system calls that release the GIL), so two cores copy at once while the walk
goes on; smaller ones are copied in the walk's thread (measured: handing them
to the pool costs more CPU in GIL hand-offs than it saves); memory stays flat (a bounded queue; no file is read into Python
buffers unless the kernel refuses every other way, and then 1 MiB at a time).

Items travel as JSON lines (``encode_item`` / ``read_items``) so the planner
may run in another process than the copier.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import resource
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, NamedTuple

from snapshotter.errors import SnapshotError
from snapshotter.rmtree import remove_tree
from snapshotter.safepath import mkdir_all, secure_join, short_path

#: xattr names never copied: overlayfs's own, bale's owner records (snapshotter.owners) and SELinux
#: labels (as the tar path drops them)
SKIPPED_XATTRS = ("trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.", "user.bale.", "security.selinux")
#: files at least this big (bytes) are copied by the thread pool, smaller ones in the walk's thread
POOLED = 1 << 20
#: copy threads, and regular files queued or being copied at most (open fds stay bounded)
THREADS = 2
IN_FLIGHT = 64
#: bytes per copy_file_range / sendfile / read call
CHUNK = 8 << 20
FICLONE = 0x40049409

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Item(NamedTuple):
    """One entry to copy.

    root: a source directory (host path, absolute); rel: the entry's path under it ("a/b",
    never empty, no ``..``); name: its path under the destination directory; mode: a forced
    permission mode (None: the source's); mtime: a forced mtime in whole seconds (None: the
    source's); keep_owner: the source's uid/gid (else 0:0, unless the copy has an owner);
    what: how errors name the source (a context-relative path); once: a directory entry that
    may appear several times (made by the first, later ones skipped)."""

    root: str
    rel: str
    name: str
    mode: int | None = None
    mtime: int | None = None
    keep_owner: bool = False
    what: str = ""
    once: bool = False


def encode_item(item: Item) -> bytes:
    """One JSON line (names surrogate-escaped as \\udcXX, so any bytes survive)."""
    return json.dumps(list(item)).encode("ascii") + b"\n"


def read_items(stream: IO[bytes]) -> Iterator[Item]:
    """The items of a stream of ``encode_item`` lines; SnapshotError for a malformed line."""
    for line in stream:
        try:
            root, rel, name, mode, mtime, keep, what, once = json.loads(line)
            yield Item(str(root), str(rel), str(name), None if mode is None else int(mode),
                       None if mtime is None else int(mtime), bool(keep), str(what), bool(once))
        except (ValueError, TypeError) as exc:
            raise SnapshotError(f"copy plan: malformed entry: {exc}") from None


def _parts(path: str, what: str) -> list[str]:
    parts = [p for p in path.split("/") if p and p != "."]
    if not parts or ".." in parts:
        raise SnapshotError(f"copy plan: bad path {path!r} for {what or path}")
    return parts


class _Ref:
    """A directory fd shared by the walk and the copy jobs working in that directory: closed when
    the last holder lets go (``Copier._hold`` / ``Copier._drop``)."""

    __slots__ = ("fd", "refs")

    def __init__(self, fd: int) -> None:
        self.fd, self.refs = fd, 1


#: directory levels a chain keeps open at most: a 1,100-level tree must copy under a hard
#: RLIMIT_NOFILE of 1,024 (two chains, the copy jobs' files and bale's own fds share it)
HELD_LEVELS = 128


class _Chain:
    """Open directory fds along one path below a root, reused between neighbouring entries
    (entries come in walk order). Only the deepest HELD_LEVELS levels stay open; a shallower level
    is reopened by name, O_NOFOLLOW, from its parent when the walk comes back up to it."""

    def __init__(self, root: _Ref) -> None:
        self.root = root
        self.names: list[str] = []
        #: None: a level whose fd was let go to stay within HELD_LEVELS (reopened when needed)
        self.refs: list[_Ref | None] = []

    def top(self) -> _Ref:
        ref = self.refs[-1] if self.refs else self.root
        assert ref is not None  # the deepest level is always held
        return ref

    def parent_of(self, i: int) -> _Ref:
        """The held fd of level ``i - 1`` (the root for level 0)."""
        ref = self.refs[i - 1] if i else self.root
        assert ref is not None
        return ref

    def common(self, parts: list[str]) -> int:
        n = 0
        while n < len(self.names) and n < len(parts) and self.names[n] == parts[n]:
            n += 1
        return n


@dataclass
class _Stats:
    warnings: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reflink: bool = True
    copy_range: bool = True
    sendfile: bool = True


def _no_reopen(level: int, parent: int) -> int:
    raise AssertionError("a chain truncated to nothing reopens no level")


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (capped at 2**20), as Go's runtime
    does for every Go program (buildah, BuildKit): the copy holds one directory fd per level on each
    side, so a 1,100-level context needs ~2,200 where a fresh Debian's default soft limit is 1,024
    ('Too many open files'). Returns the soft limit now in force; never fails (keeps the old one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            return want
        except (OSError, ValueError):
            pass
    return soft


class Copier:
    """Copies items into ``target`` (an existing directory, host path). ``owner``: the (uid, gid)
    every entry gets (--chown), else each item's owner rule. Use as a context manager; ``add``
    each item in walk order; ``close`` waits for the copies, sets the directories' times and
    returns the warnings. Errors are SnapshotError naming the entry (one line).

    Files of POOLED bytes or more are copied by a pool of THREADS threads (creating a file, moving
    its bytes and setting its metadata are system calls that release the GIL), everything else in
    ``add``'s thread, in order. The order still holds where it matters: an entry whose name a file job is
    still making waits for that job, a hard link for the job making its target, and a directory
    is removed only when no job is running."""

    def __init__(self, target: Path, owner: tuple[int, int] | None = None, *, socket_files: bool = False) -> None:
        self.target = Path(target)
        self.owner = owner
        #: a socket item becomes an empty regular file (COPY --from, as BuildKit); else it is skipped
        self.socket_files = socket_files
        self.stats = _Stats()
        self._lock = threading.Lock()  # guards _Ref.refs
        raise_open_files_limit()  # a directory fd per level, both sides
        self._dst = _Chain(_Ref(os.open(short_path(self.target), _DIR_FLAGS & ~os.O_NOFOLLOW)))
        self._src: _Chain | None = None
        self._src_root = ""
        self._links: dict[tuple[int, int], str] = {}  # (dev, ino) of multiply-linked sources -> dest name
        self._seen_dirs: set[str] = set()
        self._dir_names: set[str] = set()  # destination directories the copy made or went through
        self._dir_times: list[tuple[str, int]] = []
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="copy")
        self._slots = threading.BoundedSemaphore(IN_FLIGHT)
        self._pending: dict[str, Future[None]] = {}  # dest name -> the job making that file

    def __enter__(self) -> "Copier":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self._abort()

    # --- shared directory fds ----------------------------------------------------------------
    def _hold(self, ref: _Ref) -> None:
        with self._lock:
            ref.refs += 1

    def _drop(self, ref: _Ref) -> None:
        with self._lock:
            ref.refs -= 1
            last = ref.refs == 0
        if last:
            os.close(ref.fd)

    def _truncate(self, chain: _Chain, depth: int, reopen: Callable[[int, int], int]) -> None:
        """Let go of the levels below ``depth``; levels let go earlier (None) that are now the
        deepest are reopened: ``reopen(level, parent_fd)`` gives the fd."""
        while len(chain.refs) > depth:
            ref = chain.refs.pop()
            if ref is not None:
                self._drop(ref)
            chain.names.pop()
        if chain.refs and chain.refs[-1] is None:
            first = max(i for i in range(-1, len(chain.refs)) if i < 0 or chain.refs[i] is not None) + 1
            for i in range(first, len(chain.refs)):
                chain.refs[i] = _Ref(reopen(i, chain.parent_of(i).fd))
            self._bound(chain)

    def _push(self, chain: _Chain, name: str, fd: int) -> None:
        chain.refs.append(_Ref(fd))
        chain.names.append(name)
        self._bound(chain)

    def _bound(self, chain: _Chain) -> None:
        held = [i for i, r in enumerate(chain.refs) if r is not None]
        for i in held[:max(0, len(held) - HELD_LEVELS)]:
            ref = chain.refs[i]
            chain.refs[i] = None
            if ref is not None:
                self._drop(ref)

    def _close_chain(self, chain: _Chain) -> None:
        self._truncate(chain, 0, _no_reopen)
        self._drop(chain.root)

    # --- sources ---------------------------------------------------------------------------
    def _source_parent(self, item: Item, parts: list[str]) -> _Ref:
        """The source directory holding ``parts[-1]``, each level opened O_NOFOLLOW."""
        if self._src is None or item.root != self._src_root:
            if self._src is not None:
                self._close_chain(self._src)
                self._src = None
            try:
                self._src = _Chain(_Ref(os.open(short_path(item.root), _DIR_FLAGS & ~os.O_NOFOLLOW)))
            except OSError as exc:
                raise SnapshotError(f"copy source {item.what or item.rel}: {exc.strerror}") from None
            self._src_root = item.root
        chain = self._src
        want = parts[:-1]
        keep = chain.common(want)

        def reopen(level: int, parent: int) -> int:
            return os.open(chain.names[level], _DIR_FLAGS, dir_fd=parent)
        try:
            self._truncate(chain, keep, reopen)
            for name in want[keep:]:
                self._push(chain, name, os.open(name, _DIR_FLAGS, dir_fd=chain.top().fd))
        except OSError as exc:
            raise SnapshotError(f"copy source {item.what or item.rel}: {exc.strerror}") from None
        return chain.top()

    # --- destination -----------------------------------------------------------------------
    def _dest_parent(self, parts: list[str]) -> _Ref:
        """The destination directory that will hold ``parts[-1]``: each level opened O_NOFOLLOW;
        a missing level is made (0755, 0:0, as apply_tar's parents); a symlink or anything else in
        the way takes the confined path walk (mkdir_all inside the target)."""
        chain = self._dst
        want = parts[:-1]
        keep = chain.common(want)

        def reopen(level: int, parent: int) -> int:
            try:
                return os.open(chain.names[level], _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                return self._confined_dir(chain.names[:level + 1])
        self._truncate(chain, keep, reopen)
        for i in range(keep, len(want)):
            name = want[i]
            cname = "/".join(want[:i + 1])
            self._wait_for(cname)
            top = chain.top().fd
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=top)
            except FileNotFoundError:
                os.mkdir(name, 0o700, dir_fd=top)
                os.chmod(name, 0o755, dir_fd=top, follow_symlinks=False)
                fd = os.open(name, _DIR_FLAGS, dir_fd=top)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                fd = self._confined_dir(want[:i + 1])
            self._dir_names.add(cname)
            self._push(chain, name, fd)
        return chain.top()

    def _confined_dir(self, parts: list[str]) -> int:
        """A destination level that is a symlink or a file: resolved and made inside the target
        (symlinks followed with the target as /, a file in the way replaced), as apply_tar does."""
        self._drain()  # what is in the way may be a directory jobs are writing into
        cpath = "/" + "/".join(parts)

        def in_the_way(host: Path, _cpath: str) -> None:
            remove_tree(short_path(host))
        mkdir_all(self.target, cpath, in_the_way=in_the_way)
        host = secure_join(self.target, cpath)
        return os.open(short_path(host), _DIR_FLAGS)

    def _wait_for(self, name: str) -> None:
        """Let the job making ``name`` finish first (an entry of the same name comes next)."""
        job = self._pending.pop(name, None)
        if job is not None:
            job.result()

    def _drain(self) -> None:
        """Wait for every job (something is about to be removed); the first error is raised."""
        jobs, self._pending = list(self._pending.values()), {}
        for job in jobs:
            job.result()

    # --- entries ---------------------------------------------------------------------------
    def add(self, item: Item) -> None:
        """Copy one entry (its parents exist or are made). SnapshotError on failure."""
        src_parts = _parts(item.rel, item.what)
        dst_parts = _parts(item.name, item.what)
        name = "/".join(dst_parts)
        if item.once:
            if name in self._seen_dirs:
                return
            self._seen_dirs.add(name)
        try:
            self._add(item, src_parts, dst_parts, name)
        except SnapshotError:
            raise
        except OSError as exc:
            raise SnapshotError(f"{name}: {exc.strerror or exc}") from None

    def _add(self, item: Item, src_parts: list[str], dst_parts: list[str], name: str) -> None:
        sref = self._source_parent(item, src_parts)
        sdir, sname = sref.fd, src_parts[-1]
        try:
            st = os.stat(sname, dir_fd=sdir, follow_symlinks=False)
        except OSError as exc:
            raise SnapshotError(f"copy source {item.what or item.rel}: {exc.strerror}") from None
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFSOCK and not self.socket_files:
            return  # fsutil's walker drops sockets; nothing readable to copy
        dref = self._dest_parent(dst_parts)
        ddir, dname = dref.fd, dst_parts[-1]
        self._wait_for(name)
        if kind == stat.S_IFREG and st.st_nlink > 1:
            first = self._links.get((st.st_dev, st.st_ino))
            if first is not None and first != name:
                self._wait_for(first)
                self._replace(ddir, dname, False)
                self._hardlink(first, ddir, dname, name)
                return
            self._links[(st.st_dev, st.st_ino)] = name
        uid, gid = self.owner if self.owner is not None else \
            ((st.st_uid, st.st_gid) if item.keep_owner else (0, 0))
        mode = item.mode if item.mode is not None else stat.S_IMODE(st.st_mode)
        mtime_ns = item.mtime * 1_000_000_000 if item.mtime is not None else st.st_mtime_ns
        meta = (uid, gid, mode, mtime_ns)
        if kind == stat.S_IFREG:
            if name in self._dir_names:  # replacing a directory of this copy: in order, no job inside
                self._replace(ddir, dname, False)
                self._dir_names.discard(name)
            self._slots.acquire()
            self._hold(sref)
            self._hold(dref)
            if st.st_size < POOLED:  # small: here (a job costs more than it saves: GIL hand-offs)
                self._file(item, sref, sname, st, dref, dname, name, meta)
                return
            try:
                job = self._pool.submit(self._file, item, sref, sname, st, dref, dname, name, meta)
            except BaseException:
                self._drop(sref)
                self._drop(dref)
                self._slots.release()
                raise
            self._pending[name] = job
            if len(self._pending) >= IN_FLIGHT:
                self._reap()
            return
        self._replace(ddir, dname, kind == stat.S_IFDIR)
        if kind == stat.S_IFDIR:
            self._dir(item, sdir, sname, ddir, dname, name, meta)
        elif kind == stat.S_IFLNK:
            target = os.readlink(sname, dir_fd=sdir)
            os.symlink(target, dname, dir_fd=ddir)
            xattrs = _xattrs(_at(sdir, sname))
            self._chown_at(ddir, dname, name, uid, gid)
            self._set_xattrs(_at(ddir, dname), name, xattrs)
            try:
                os.utime(dname, ns=(mtime_ns, mtime_ns), dir_fd=ddir, follow_symlinks=False)
            except OSError:
                pass
        else:  # FIFO, character or block device, socket (as an empty file)
            if kind == stat.S_IFIFO:
                os.mkfifo(dname, 0o600, dir_fd=ddir)
            elif kind == stat.S_IFSOCK:
                os.close(os.open(dname, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                                 dir_fd=ddir))
            else:
                try:
                    os.mknod(dname, kind | 0o600, st.st_rdev, dir_fd=ddir)
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.EACCES):
                        raise
                    # BuildKit makes device nodes (fsutil copy/copy.go:456-461) or fails
                    raise SnapshotError(f"{name}: cannot create device node: {exc.strerror} "
                                        "(device nodes need real root)") from None
            xattrs = _xattrs(_at(sdir, sname))
            self._chown_at(ddir, dname, name, uid, gid)
            self._set_xattrs(_at(ddir, dname), name, xattrs)
            os.chmod(dname, mode & 0o7777, dir_fd=ddir)
            os.utime(dname, ns=(mtime_ns, mtime_ns), dir_fd=ddir)

    def _replace(self, ddir: int, dname: str, is_dir: bool) -> None:
        """Remove what is at ``dname`` unless both it and the new entry are directories."""
        try:
            old = os.stat(dname, dir_fd=ddir, follow_symlinks=False)
        except FileNotFoundError:
            return
        if is_dir and stat.S_ISDIR(old.st_mode):
            return
        if stat.S_ISDIR(old.st_mode):
            self._drain()  # no job may be writing below it
        # (the chain of open destination fds ends at ddir, the parent: nothing cached lies below)
        remove_tree(dname, dir_fd=ddir)

    def _hardlink(self, first: str, ddir: int, dname: str, name: str) -> None:
        src = secure_join(self.target, first, follow_final=False)
        ssrc = short_path(src)
        if not os.path.lexists(ssrc) or os.path.isdir(ssrc) and not os.path.islink(ssrc):
            raise SnapshotError(f"{name}: hard link to missing {first}")
        os.link(ssrc, dname, dst_dir_fd=ddir, follow_symlinks=False)

    def _dir(self, item: Item, sdir: int, sname: str, ddir: int, dname: str, name: str,
             meta: tuple[int, int, int, int]) -> None:
        uid, gid, mode, mtime_ns = meta
        try:
            sfd = os.open(sname, _DIR_FLAGS, dir_fd=sdir)
        except OSError as exc:
            raise SnapshotError(f"copy source {item.what or item.rel}: {exc.strerror}") from None
        try:
            xattrs = _xattrs(sfd)
        finally:
            os.close(sfd)
        try:
            os.mkdir(dname, 0o700, dir_fd=ddir)
        except FileExistsError:
            pass
        fd = os.open(dname, _DIR_FLAGS, dir_fd=ddir)
        try:
            self._fchown(fd, name, uid, gid)
            self._set_xattrs(fd, name, xattrs)
            os.fchmod(fd, mode & 0o7777)
        finally:
            os.close(fd)
        self._dir_names.add(name)
        self._dir_times.append((name, mtime_ns))

    def _file(self, item: Item, sref: _Ref, sname: str, st: os.stat_result, dref: _Ref, dname: str, name: str,
              meta: tuple[int, int, int, int]) -> None:
        """A pool job: one regular file, contents then owner, xattrs, mode and times. The type
        was checked (lstat) before; the open fd is checked again (same inode, still regular)."""
        try:
            what = item.what or item.rel
            try:
                sfd = os.open(sname, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=sref.fd)
            except OSError as exc:
                raise SnapshotError(f"copy source {what}: {exc.strerror}") from None
            try:
                now = os.fstat(sfd)
                if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                    raise SnapshotError(f"copy source {what}: changed while being copied")
                dfd = self._create(dref.fd, dname, name)
                try:
                    self._fill(sfd, dfd, st.st_size, name, what, meta)
                finally:
                    os.close(dfd)
            finally:
                os.close(sfd)
        finally:
            self._drop(sref)
            self._drop(dref)
            self._slots.release()

    def _create(self, ddir: int, dname: str, name: str) -> int:
        """The new file, empty; what was there before (not a directory this copy went through,
        ``add`` removed those in order) is removed first."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(dname, flags, 0o600, dir_fd=ddir)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SnapshotError(f"{name}: {exc.strerror or exc}") from None
        try:
            remove_tree(dname, dir_fd=ddir)
            return os.open(dname, flags, 0o600, dir_fd=ddir)
        except OSError as exc:
            raise SnapshotError(f"{name}: {exc.strerror or exc}") from None

    def _fill(self, sfd: int, dfd: int, size: int, name: str, what: str, meta: tuple[int, int, int, int]) -> None:
        uid, gid, mode, mtime_ns = meta
        try:
            _copy_data(sfd, dfd, size, what, self.stats)
            xattrs = _xattrs(sfd)
            self._fchown(dfd, name, uid, gid)
            self._set_xattrs(dfd, name, xattrs)
            os.fchmod(dfd, mode & 0o7777)
            os.utime(dfd, ns=(mtime_ns, mtime_ns))
        except OSError as exc:
            raise SnapshotError(f"{name}: {exc.strerror or exc}") from None

    def _reap(self) -> None:
        """Raise the first error of a finished job; forget finished jobs."""
        for name, job in list(self._pending.items()):
            if job.done():
                del self._pending[name]
                job.result()

    # --- metadata --------------------------------------------------------------------------
    def _owner_error(self, name: str, uid: int, gid: int, exc: OSError) -> SnapshotError:
        why = "outside the mapped user namespace range" if exc.errno == errno.EINVAL else exc.strerror
        return SnapshotError(f"cannot set owner of {name} to {uid}:{gid}: {why}")

    def _fchown(self, fd: int, name: str, uid: int, gid: int) -> None:
        try:
            os.fchown(fd, uid, gid)
        except OSError as exc:
            raise self._owner_error(name, uid, gid, exc) from None

    def _chown_at(self, ddir: int, dname: str, name: str, uid: int, gid: int) -> None:
        try:
            os.chown(dname, uid, gid, dir_fd=ddir, follow_symlinks=False)
        except OSError as exc:
            raise self._owner_error(name, uid, gid, exc) from None

    def _set_xattrs(self, where: int | str, name: str, xattrs: list[tuple[str, bytes]]) -> None:
        for key, value in xattrs:
            try:
                os.setxattr(where, key, value, follow_symlinks=isinstance(where, int))
            except OSError as exc:
                # Docker goes on: BuildKit's copy logs it (solver/llbsolver/file/backend.go:201-204)
                with self.stats.lock:
                    self.stats.warnings.append(f"{name}: cannot set xattr {key}: {exc.strerror}")

    # --- end -------------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Wait for every copy, set the directories' times (last made first), release the fds;
        returns the warnings. The first error of a copy is raised here."""
        try:
            self._drain()
            for name, mtime_ns in reversed(self._dir_times):
                parts = name.split("/")
                try:
                    ddir = self._dest_parent(parts).fd
                    os.utime(parts[-1], ns=(mtime_ns, mtime_ns), dir_fd=ddir, follow_symlinks=False)
                except OSError:
                    pass
        finally:
            self._release()
        _report(self.stats.warnings)
        return list(self.stats.warnings)

    def _abort(self) -> None:
        """After an error: the queued jobs run out (each releases what it holds), fds are closed."""
        self._release()

    def _release(self) -> None:
        self._pool.shutdown(wait=True)
        self._pending = {}
        if self._src is not None:
            self._close_chain(self._src)
            self._src = None
        if self._dst.root.refs > 0:
            self._close_chain(self._dst)


def copy_items(items: Iterable[Item], target: Path, owner: tuple[int, int] | None = None) -> list[str]:
    """Copy ``items`` (walk order) into the directory ``target``; returns warnings (xattrs that
    could not be set). SnapshotError naming the entry on any failure."""
    with Copier(target, owner) as c:
        for item in items:
            c.add(item)
        return c.close()


def _report(warnings: list[str], shown: int = 5) -> None:
    """What the copy could not keep (an xattr) is said, never dropped silently, as apply_tar says it
    (Docker logs the same and goes on: backend.go:201-204)."""
    log = logging.getLogger("bale")
    for w in warnings[:shown]:
        log.warning("%s", w)
    if len(warnings) > shown:
        log.warning("... and %d more entries like these", len(warnings) - shown)


def _at(dir_fd: int, name: str) -> str:
    """A path naming ``name`` in the directory ``dir_fd`` (for calls without a dir_fd form);
    the final component is not followed by the callers."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def _xattrs(where: int | str) -> list[tuple[str, bytes]]:
    """The entry's extended attributes worth copying (name order); unreadable ones are skipped."""
    follow = isinstance(where, int)  # an fd: follow_symlinks must stay True (nothing is followed)
    try:
        names = os.listxattr(where, follow_symlinks=follow)
    except OSError:
        return []
    out: list[tuple[str, bytes]] = []
    for key in sorted(names):
        if key.startswith(SKIPPED_XATTRS):
            continue
        try:
            out.append((key, os.getxattr(where, key, follow_symlinks=follow)))
        except OSError:
            continue
    return out


def _copy_data(sfd: int, dfd: int, size: int, what: str, stats: _Stats) -> None:
    """``size`` bytes of ``sfd`` (from offset 0) into the empty ``dfd``: a reflink, else
    copy_file_range, else sendfile, else 1 MiB reads and writes. A source that grew is cut at
    ``size`` (what its stat said); one that shrank is a SnapshotError naming ``what``."""
    if size == 0:
        return
    if stats.reflink:
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
            if os.fstat(dfd).st_size > size:
                os.ftruncate(dfd, size)
            if os.fstat(dfd).st_size == size:
                return
            os.ftruncate(dfd, 0)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS,
                             errno.EPERM, errno.EBADF):
                stats.reflink = False
            else:
                raise
    done = 0
    if stats.copy_range:
        done = _loop(sfd, dfd, size, stats, "copy_range")
    if done < size and stats.sendfile:
        done = _loop(sfd, dfd, size, stats, "sendfile", done)
    while done < size:
        chunk = os.pread(sfd, min(1 << 20, size - done), done)
        if not chunk:
            raise SnapshotError(f"copy source {what}: file shrank while being copied (read {done} of {size} bytes)")
        view = memoryview(chunk)
        while view:
            n = os.pwrite(dfd, view, done)
            done += n
            view = view[n:]


def _loop(sfd: int, dfd: int, size: int, stats: _Stats, how: str, done: int = 0) -> int:
    """Bytes copied up to ``size`` with ``how`` ("copy_range" or "sendfile"), from ``done``; stops
    early (and turns ``how`` off for this copier) when the kernel refuses it for these files."""
    if how == "sendfile":
        os.lseek(dfd, done, os.SEEK_SET)  # sendfile writes at the output's position
    while done < size:
        try:
            if how == "copy_range":
                n = os.copy_file_range(sfd, dfd, min(CHUNK, size - done), done, done)
            else:
                n = os.sendfile(dfd, sfd, done, min(CHUNK, size - done))
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF) and done == 0:
                setattr(stats, "copy_range" if how == "copy_range" else "sendfile", False)
                return done
            raise
        if n == 0:
            return done  # end of file: the caller's read loop reports the shrink
        done += n
    return done
