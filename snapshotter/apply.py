"""Apply a layer tar to a directory: the exact inverse of a diff, streamed.

Two whiteout formats: ``native`` performs deletions (a plain rootfs), and
``overlay`` records them as overlayfs does (0:0 character devices, opaque
xattrs) so the directory can serve as an overlay lowerdir. Nothing is ever
written outside ``target``: parents are resolved with chroot semantics
(safepath.secure_join) and the final component is never followed.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

from snapshotter import owners
from snapshotter.errors import SnapshotError
from snapshotter.rmtree import remove_tree
from snapshotter.safepath import clean, container_path, mkdir_all, secure_join, short_path
from snapshotter.tarlimits import open_stream

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTRS = ("user.overlay.opaque", "user.fuseoverlayfs.opaque")
#: overlay's own xattrs, and bale's owner records (owners.py): never written to a layer, never taken from one
DROPPED_XATTR_PREFIXES = ("user.overlay.", "trusted.overlay.", "user.fuseoverlayfs.", "user.bale.")


#: file type bits of a tar entry's type (what owners.record needs to know where the record goes)
_TAR_TYPE_MODE = {tarfile.DIRTYPE: stat.S_IFDIR, tarfile.SYMTYPE: stat.S_IFLNK, tarfile.FIFOTYPE: stat.S_IFIFO,
                  tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK}


@dataclass
class ApplyResult:
    entries: int = 0
    warnings: list[str] = field(default_factory=list)


def _remove(path: Path) -> None:
    """rm -rf without following symlinks, at any depth and path length (we are root here)."""
    remove_tree(short_path(path))


def _mkdirs(target: Path, cpath: str, created: set[str], removed: Callable[[], None] = lambda: None) -> Path:
    """mkdir -p a container directory, confined (symlinks on the way resolved inside ``target``,
    every missing level made, a non-directory in the way replaced, ``removed`` told so); returns
    its host path."""
    def in_the_way(host: Path, _cpath: str) -> None:
        removed()
        _remove(host)
    for made in mkdir_all(target, cpath, in_the_way=in_the_way):
        created.add(made)
    return secure_join(target, cpath)


class _Parents:
    """The parent directories of one extraction, made and resolved once: container path (as the
    tar names it, cleaned) -> host directory, confined as ``_mkdirs`` confines it.

    A cached answer stays right while nothing that existed is removed: creating a name cannot
    change how an already-resolved path resolves (every level of it exists, so the new name is
    not on it), and only removal (an entry replacing something, a whiteout, an opaque directory,
    a file in a parent's way) can turn a directory on the way into a symlink or a file. So every
    removal forgets the whole cache (``forget``), and a miss whose own parent is known costs one
    lstat (plus the mkdir); anything but a plain directory there takes the full confined walk."""

    LIMIT = 1 << 16  # entries kept (memory stays flat on huge trees: the cache just restarts)

    def __init__(self, target: Path, created: set[str]) -> None:
        self.target, self.created = target, created
        self.known: dict[str, Path] = {"/": target}

    def forget(self) -> None:
        self.known = {"/": self.target}

    def get(self, cpath: str) -> Path:
        hit = self.known.get(cpath)
        if hit is not None:
            return hit
        host = self._step(cpath)
        if host is None:
            host = _mkdirs(self.target, cpath, self.created, self.forget)
        if len(self.known) >= self.LIMIT:
            self.forget()
        self.known[cpath] = host
        return host

    def _step(self, cpath: str) -> Path | None:
        """``cpath`` one plain name below a known directory: that directory's host path plus the
        name when it is a directory or is missing (then made, 0755, as mkdir_all makes it)."""
        up, name = os.path.split(cpath)
        base = self.known.get(up)
        if base is None or not name or name in (".", ".."):
            return None
        host = base / name
        try:
            st = os.lstat(short_path(host))
        except FileNotFoundError:
            os.mkdir(short_path(host), 0o700)
            os.chmod(short_path(host), 0o755)
            self.created.add(container_path(self.target, host))
            return host
        return host if stat.S_ISDIR(st.st_mode) else None


def _set_xattrs(path: Path, m: tarfile.TarInfo, result: ApplyResult) -> None:
    for key, value in m.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        name = key[len("SCHILY.xattr."):]
        if name.startswith(DROPPED_XATTR_PREFIXES):
            continue
        raw = value.encode("utf-8", "surrogateescape")
        try:
            os.setxattr(short_path(path), name, raw, follow_symlinks=False)
        except OSError as exc:
            # Docker goes on: BuildKit's copy logs it (solver/llbsolver/file/backend.go:201-204),
            # go-archive warns of xattrs the filesystem refuses; the caller prints the warning
            result.warnings.append(f"{m.name}: cannot set xattr {name}: {exc.strerror}")


def apply_tar(src: BinaryIO, target: Path, *, whiteout_format: str = "native",
              chown: tuple[int, int] | None = None, ignore_chown_errors: bool = True,
              strict: bool = False) -> ApplyResult:
    """Extract the (uncompressed or compressed) tar stream ``src`` into ``target``.

    Headers are bounded as Go's archive/tar bounds them (tarlimits); symlinks met on the way are
    resolved inside ``target`` as Docker's chrooted extraction does. An owner that cannot be set
    (outside the user namespace's mapped ids) is refused for set-uid/set-gid entries, which would
    otherwise become set-uid *root* files, and for every entry when ``strict`` (a COPY/ADD, where
    BuildKit fails too); else it is a warning. With ``strict`` a device node that cannot be made is
    an error too. Any failure is a SnapshotError naming the entry."""
    if whiteout_format not in ("native", "overlay"):
        raise ValueError(whiteout_format)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    result = ApplyResult()
    created: set[str] = set()
    parents = _Parents(target, created)
    dir_times: list[tuple[Path, float]] = []
    try:
        tf = open_stream(src)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SnapshotError(f"cannot read layer: {exc}") from None
    m: tarfile.TarInfo | None = None
    unlocked: list[tuple[str, int]] = []  # (host dir, its mode) opened for writing, restored at the end
    try:
        for m in tf:
            result.entries += 1
            try:
                _apply_member(tf, m, target, whiteout_format, chown, ignore_chown_errors and not strict, created,
                              dir_times, result, strict, parents)
            except PermissionError:
                # recording owners, bale owns every directory but has no CAP_DAC_OVERRIDE: a directory
                # the image made read-only (0555 /usr/bin) is opened to its owner for the extraction
                if not owners.recording() or not _unlock_parents(target, m.name, unlocked):
                    raise
                parents.forget()
                _apply_member(tf, m, target, whiteout_format, chown, ignore_chown_errors and not strict, created,
                              dir_times, result, strict, parents)
    except (tarfile.TarError, EOFError) as exc:
        raise SnapshotError(f"corrupt layer tar: {exc}") from None
    except OSError as exc:
        what = f"layer entry {m.name!r}" if m is not None else "layer"
        raise SnapshotError(f"{what}: {exc.strerror or exc}") from None
    finally:
        tf.close()
        for host, mode in reversed(unlocked):
            try:
                os.chmod(host, mode, follow_symlinks=False)
            except OSError:
                pass
    for path, mtime in reversed(dir_times):
        try:
            os.utime(short_path(path), (mtime, mtime), follow_symlinks=False)
        except OSError:
            pass
    _report(result)
    return result


def _unlock_parents(target: Path, name: str, unlocked: list[tuple[str, int]]) -> bool:
    """Give the owner rwx on every existing directory from ``target`` down to entry ``name``'s
    parent that lacks it (each recorded in ``unlocked`` with its mode); False when none did."""
    changed = False
    cur = target
    for part in [p for p in clean(name).split("/") if p][:-1]:
        cur = secure_join(target, container_path(target, cur) + "/" + part)
        host = short_path(cur)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            break
        if not stat.S_ISDIR(st.st_mode):
            break
        if st.st_mode & 0o700 != 0o700:
            unlocked.append((host, stat.S_IMODE(st.st_mode)))
            os.chmod(host, stat.S_IMODE(st.st_mode) | 0o700, follow_symlinks=False)
            changed = True
    top = short_path(target)
    if os.stat(top).st_mode & 0o700 != 0o700:
        unlocked.insert(0, (top, stat.S_IMODE(os.stat(top).st_mode)))
        os.chmod(top, stat.S_IMODE(os.stat(top).st_mode) | 0o700)
        changed = True
    return changed


def _report(result: ApplyResult, shown: int = 5) -> None:
    """What extraction could not keep (an xattr, an owner, a device node) is said, never dropped
    silently: Docker logs the same and goes on (backend.go:201-204; go-archive's xattr warning)."""
    # xattrs only: owners are lost only in the single-id fallback, which says so once, and device
    # nodes in a layer are skipped in a user namespace as go-archive does (at debug level)
    said = [w for w in result.warnings if ": cannot set xattr " in w]
    log = logging.getLogger("bale")
    for w in said[:shown]:
        log.warning("%s", w)
    if len(said) > shown:
        log.warning("... and %d more entries like these", len(said) - shown)


def _apply_member(tf: tarfile.TarFile, m: tarfile.TarInfo, target: Path, fmt: str, chown: tuple[int, int] | None,
                  ignore_chown_errors: bool, created: set[str], dir_times: list[tuple[Path, float]],
                  result: ApplyResult, strict: bool = False, parents: _Parents | None = None) -> None:
    if parents is None:
        parents = _Parents(target, created)
    cpath = clean(m.name)
    if cpath == "/":
        if m.isdir():
            _set_meta(target, m, chown, ignore_chown_errors, result)
            dir_times.append((target, m.mtime))
        return
    parent, base = os.path.split(cpath)
    if base == OPAQUE:
        host_dir = parents.get(parent)
        if fmt == "overlay":
            for name in OPAQUE_XATTRS:
                os.setxattr(short_path(host_dir), name, b"y", follow_symlinks=False)
        else:
            prefix = parent.rstrip("/") + "/"
            for child in os.listdir(short_path(host_dir)):
                if prefix + child not in created:
                    parents.forget()
                    _remove(host_dir / child)
        return
    if base.startswith(WHITEOUT_PREFIX):
        name = base[len(WHITEOUT_PREFIX):]
        if not name or name in (".", ".."):
            return
        host_dir = parents.get(parent)
        victim = host_dir / name
        parents.forget()
        if fmt == "overlay":
            if os.path.lexists(short_path(victim)):
                _remove(victim)
            os.mknod(short_path(victim), stat.S_IFCHR | 0o000, os.makedev(0, 0))
        else:
            _remove(victim)
        return
    host_parent = parents.get(parent)
    dest = host_parent / base
    sdest = short_path(dest)
    try:
        existing: os.stat_result | None = os.lstat(sdest)
    except FileNotFoundError:
        existing = None
    if existing is not None and not (m.isdir() and stat.S_ISDIR(existing.st_mode)):
        parents.forget()  # a directory on a cached path may go (or become a symlink)
        _remove(dest)
    created.add(cpath)
    if m.isdir():
        if existing is None or not stat.S_ISDIR(existing.st_mode):
            os.mkdir(sdest, 0o700)
        dir_times.append((dest, m.mtime))
    elif m.isreg():
        fd = os.open(sdest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            _write_body(tf, m, fd)
        finally:
            os.close(fd)
    elif m.issym():
        os.symlink(m.linkname, sdest)
    elif m.islnk():
        src = secure_join(target, clean(m.linkname), follow_final=False)
        ssrc = short_path(src)
        if not os.path.lexists(ssrc) or os.path.isdir(ssrc) and not os.path.islink(ssrc):
            raise SnapshotError(f"layer entry {m.name}: hard link to missing {m.linkname}")
        os.link(ssrc, short_path(dest), follow_symlinks=False)
        return  # a hard link shares the target's metadata
    elif m.isfifo():
        os.mkfifo(sdest, 0o600)
    elif m.ischr() or m.isblk():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        try:
            os.mknod(sdest, kind | 0o600, os.makedev(m.devmajor, m.devminor))
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EACCES):
                raise
            if strict:  # BuildKit's copy makes device nodes (fsutil copy/copy.go:456-461) or fails
                raise SnapshotError(f"{m.name}: cannot create device node: {exc.strerror} "
                                    "(device nodes need real root)") from None
            result.warnings.append(f"{m.name}: device node skipped ({exc.strerror})")
            return
    else:
        result.warnings.append(f"{m.name}: unsupported tar entry type {m.type!r} skipped")
        return
    _set_meta(dest, m, chown, ignore_chown_errors, result)


#: bytes moved per read and write of a file's body
BODY_CHUNK = 1 << 20


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_body(tf: tarfile.TarFile, m: tarfile.TarInfo, fd: int) -> None:
    """Copy ``m``'s data from the tar stream to ``fd`` in 1 MiB reads and writes (tarfile's own
    file object reads 10 KiB at a time). A plain stream is read straight from the file object
    under tarfile's _Stream (its look-ahead buffer first, its position kept right); compressed
    streams and sparse members go through tarfile. A short stream is tarfile's ReadError."""
    stream: Any = tf.fileobj
    if m.sparse is not None or getattr(stream, "comptype", None) != "tar" or not hasattr(stream, "buf"):
        data = tf.extractfile(m)
        if data is not None:
            while chunk := data.read(BODY_CHUNK):
                _write_all(fd, chunk)
        return
    stream.seek(m.offset_data)  # a no-op: the stream stands right after the header
    left = m.size
    ahead: bytes = stream.buf
    if ahead:
        take = ahead[:left]
        stream.buf = ahead[len(take):]
        stream.pos += len(take)
        left -= len(take)
        _write_all(fd, take)
    raw = stream.fileobj
    while left:
        chunk = raw.read(min(left, BODY_CHUNK))
        if not chunk:
            raise tarfile.ReadError("unexpected end of data")
        stream.pos += len(chunk)
        left -= len(chunk)
        _write_all(fd, chunk)


def _set_meta(dest: Path, m: tarfile.TarInfo, chown: tuple[int, int] | None, ignore_chown_errors: bool,
              result: ApplyResult) -> None:
    uid, gid = chown if chown is not None else (m.uid, m.gid)
    try:
        if owners.recording():  # bale cannot chown here (ptrace isolation): the owner is recorded
            owners.record(short_path(dest), uid, gid, m.mode | _TAR_TYPE_MODE.get(m.type, stat.S_IFREG))
        else:
            os.lchown(short_path(dest), uid, gid)
    except OSError as exc:
        why = "outside the mapped user namespace range" if exc.errno == errno.EINVAL else exc.strerror
        if not ignore_chown_errors:
            raise SnapshotError(f"cannot set owner of {m.name} to {uid}:{gid}: {why}") from None
        if m.mode & 0o6000 and not m.issym() and not m.isdir():
            raise SnapshotError(f"{m.name}: refusing a set-uid/set-gid file whose owner {uid}:{gid} cannot be "
                                f"set ({why}); it would belong to {os.geteuid()}:{os.getegid()}") from None
        if (uid, gid) != (os.geteuid(), os.getegid()):
            result.warnings.append(f"{m.name}: cannot set owner {uid}:{gid} ({why})")
    _set_xattrs(dest, m, result)
    if not m.issym():
        os.chmod(short_path(dest), m.mode & 0o7777)
        if not m.isdir():
            os.utime(short_path(dest), (m.mtime, m.mtime))
    else:
        try:
            os.utime(short_path(dest), (m.mtime, m.mtime), follow_symlinks=False)
        except OSError:
            pass
