"""Paths confined to a root directory, with chroot semantics: every symlink
met on the way is resolved as if ``root`` were ``/``, and ``..`` never climbs
above it (buildah's copier and securejoin work the same way)."""
from __future__ import annotations

import errno
import os
import posixpath
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from snapshotter import owners
from snapshotter.errors import SnapshotError

MAX_LINKS = 255


class PathEscape(SnapshotError):
    """Too many symlinks while resolving a confined path."""


def secure_join(root: Path | str, path: str, *, follow_final: bool = True) -> Path:
    """``root``/``path`` with symlinks resolved inside ``root``. The result always lies
    under ``root``; missing components are kept as they are (the result may not exist).
    With ``follow_final=False`` a symlink in the last component is not followed."""
    root = Path(root)
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if (parts or follow_final) and os.path.islink(short_path(candidate)):
            links += 1
            if links > MAX_LINKS:
                raise PathEscape(f"{path}: too many levels of symbolic links")
            target = os.readlink(short_path(candidate))
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def container_path(root: Path | str, host_path: Path | str) -> str:
    """The in-container absolute path of a host path under ``root``."""
    rel = os.path.relpath(host_path, root)
    return "/" if rel == "." else "/" + rel


def clean(path: str) -> str:
    """An absolute, normalised container path (no trailing slash, no ``..`` above /)."""
    return posixpath.normpath("/" + path).replace("//", "/")


def mkdir_all(root: Path | str, path: str, *, mode: int = 0o755, owner: tuple[int, int] | None = None,
              in_the_way: Callable[[Path, str], None] | None = None) -> list[str]:
    """mkdir -p of ``path`` inside ``root`` with chroot semantics, as BuildKit does it
    (continuity's fs.RootPath resolves every existing symlink inside the root, then fsutil's
    copy.MkdirAll makes every missing level: copy/mkdir.go:12-79). So a path through a symlink
    whose target is missing (/var/lib/app -> /data/store) makes /data and /data/store. Each new
    directory gets ``mode`` (chmod'ed, no umask) and ``owner``. Something other than a directory
    in the way is handed to ``in_the_way(host_path, container_path)`` (which may remove it) or is
    a SnapshotError. Returns the container paths it created, top first."""
    root = Path(root)
    host = secure_join(root, path)
    rel = os.path.relpath(host, root)
    created: list[str] = []
    if rel == ".":
        return created
    cur = root
    cpath = ""
    for part in rel.split("/"):
        cur = cur / part
        cpath += "/" + part
        try:
            st = os.lstat(short_path(cur))
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            continue
        if st is not None:
            if stat.S_ISLNK(st.st_mode):  # appeared after the resolution: resolve again
                return created + mkdir_all(root, path, mode=mode, owner=owner, in_the_way=in_the_way)
            if in_the_way is None:
                raise SnapshotError(f"cannot create directory {cpath}: a file is in the way")
            in_the_way(cur, cpath)
        os.mkdir(short_path(cur), 0o700)
        if owner is not None:
            if owners.recording():  # bale cannot chown here (ptrace isolation): recorded
                owners.record(short_path(cur), *owner)
            else:
                os.lchown(short_path(cur), *owner)
        os.chmod(short_path(cur), mode)
        created.append(cpath)
    return created


#: paths at least this long (bytes) go through a directory fd: PATH_MAX is 4096 with the NUL
LONG_PATH = 3584
_dir_fds: dict[bytes, int] = {}


def short_path(path: Path | str) -> str:
    """``path`` usable by any system call whatever its length: a path longer than LONG_PATH
    becomes ``/proc/self/fd/N/REST`` with N an O_PATH descriptor of a directory on the way
    (opened in hops below PATH_MAX and kept in a small cache), so names up to the kernel's
    limits work however deep the snapshot itself lies. Shorter paths come back as they are."""
    if type(path) is str and len(path) * 4 < LONG_PATH:  # short whatever it encodes to (<= 4 bytes a char)
        return path
    raw = os.fsencode(path)
    while len(raw) >= LONG_PATH:
        cut = raw.rfind(b"/", 0, LONG_PATH)
        if cut <= 0:
            raise OSError(36, "File name too long", os.fsdecode(raw[:64]) + "...")
        prefix, rest = raw[:cut], raw[cut + 1:]
        fd = _dir_fds.get(prefix)
        if fd is not None:  # still that directory? (the open fd pins its inode number)
            try:
                now, held = os.stat(prefix, follow_symlinks=False), os.fstat(fd)
                same = (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
            except OSError:
                same = False
            if not same:
                os.close(_dir_fds.pop(prefix))
                fd = None
        if fd is None:
            if len(_dir_fds) >= 64:
                for old in _dir_fds.values():
                    os.close(old)
                _dir_fds.clear()
            fd = os.open(prefix, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            _dir_fds[prefix] = fd
        raw = b"/proc/self/fd/%d/" % fd + rest
    return os.fsdecode(raw)


@contextmanager
def reach(path: Path | str) -> Iterator[str]:
    """``path`` usable by any system call whatever its length, for the ``with`` block; safe to
    use from several threads at once (short_path's shared cache is not). A path shorter than
    LONG_PATH comes back as it is; a longer one becomes ``/proc/self/fd/N/REST`` with N an
    O_PATH descriptor of a directory on the way that belongs to this call only (opened in hops
    below PATH_MAX, each relative to the one before, all closed on exit). A directory on the
    way that is missing or not a directory raises OSError as open(2) reports it."""
    raw = os.fsencode(path)
    if len(raw) < LONG_PATH:
        yield os.fsdecode(raw)
        return
    fds: list[int] = []
    try:
        while len(raw) >= LONG_PATH:
            cut = raw.rfind(b"/", 0, LONG_PATH)
            if cut <= 0:
                raise OSError(36, "File name too long", os.fsdecode(raw[:64]) + "...")
            fds.append(os.open(raw[:cut], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                               dir_fd=fds[-1] if fds else None))
            raw = raw[cut + 1:]
        yield os.fsdecode(b"/proc/self/fd/%d/" % fds[-1] + raw)
    finally:
        for fd in fds:
            os.close(fd)


def walk(top: Path | str, *, strict: bool = False) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk for trees deeper than PATH_MAX and than Python's recursion limit: an explicit stack
    (os.walk and os.fwalk recurse once per level in Python 3.11), each directory listed through
    reach(); same (dirpath, dirnames, filenames) shape, top-down, symlinks not followed,
    dirnames prunable (and visited in their order). Directories that cannot be listed are
    skipped, as os.walk skips them, unless ``strict``: then a directory below ``top`` that cannot
    be listed (a mode-0000 directory where the walker lacks CAP_DAC_READ_SEARCH, as in the ptrace
    isolation) raises SnapshotError naming it, so a layer never silently loses its contents. Use
    reach() (or short_path() in a single thread) on the joined paths it gives."""
    stack = [os.fspath(top)]
    while stack:
        path = stack.pop()
        dirnames: list[str] = []
        filenames: list[str] = []
        try:  # reach, not short_path: thread-safe (a build walks contexts from several stages at once)
            with reach(path) as reached, os.scandir(reached) as it:
                for e in it:  # is_dir may lstat through the descriptors: while they are open
                    try:
                        is_dir = e.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    (dirnames if is_dir else filenames).append(e.name)
        except OSError as exc:
            if strict and path != os.fspath(top) and exc.errno != errno.ENOENT:
                rel = os.path.relpath(path, os.fspath(top))
                raise SnapshotError(f"cannot read directory /{rel}: {exc.strerror}") from None
            continue
        yield path, dirnames, filenames
        stack.extend(os.path.join(path, d) for d in reversed(dirnames))
