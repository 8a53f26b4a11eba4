"""The layer a direct COPY would commit, written straight from its sources: the
tar ``diff.write_tar`` makes of a clean snapshot after ``copytree.Copier`` copied
the same items into it, without the copy (no file created, each source read
once, by the kernel into the tar stream).

It is exact only where the copy's outcome is known without making it, so the
caller (the namespace side of a COPY, builder.workspace.snapshots) checks first
with ``prefix_levels`` and the writer gives up (returns a reason, the tar left
unfinished: the caller discards it and copies) on anything else:

* the destination directory is missing or an empty directory, every level
  above it a directory (no symlink), none it makes inside a set-group-ID
  directory (the kernel gives a new level that directory's group): nothing is replaced, so the layer has no
  whiteout and no opaque directory; its levels are what ``mkdir_all`` leaves
  (made ones: the given mode and owner; kept ones: as they were, copied up);
* items arrive in the layer's own order (``diff.write_tar`` sorts paths by
  component: a single directory walk in lexical order is already sorted), no
  name twice;
* no name a whiteout has (``.wh.``: the commit reads it as one);
* no device node (the copy needs real root for those), no extended attribute
  outside ``user.`` (security.*, system.* and trusted.* may be refused or
  translated when set), owners inside the user namespace's id map.

Entries are what the copy leaves and the diff reads back (copytree's rules):
owners the --chown owner, else the source's (``keep_owner``) or 0:0; modes
the forced mode or the source's (a symlink's stays 0777); mtimes the forced
one or the source's, clamped to SOURCE_DATE_EPOCH when given; a directory the
copy made or added an entry to has the time of the copy; hard links within
the items stay hard links (the first in order holds the body); extended
attributes the source's minus overlay's own and bale's records. Errors are
copytree's SnapshotErrors (a source that cannot be opened, a file that shrank).
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO, Collection, Iterable

from snapshotter.apply import DROPPED_XATTR_PREFIXES, WHITEOUT_PREFIX
from snapshotter.copytree import SKIPPED_XATTRS, Item, _parts
from snapshotter.errors import SnapshotError
from snapshotter.safepath import short_path
from snapshotter.tarwriter import DIRTYPE, FIFOTYPE, LNKTYPE, REGTYPE, SYMTYPE, TarStream, tar_header

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: source directory levels kept open at most; a deeper context is left to the copy
MAX_DEPTH = 200
_DROPPED = tuple(SKIPPED_XATTRS) + tuple(DROPPED_XATTR_PREFIXES)


@dataclass(frozen=True)
class Level:
    """One directory on the way to (and including) the destination, as the copy leaves it:
    ``path`` without leading "/", ``made`` whether mkdir_all makes it, ``mtime`` (whole seconds)
    of an existing one whose next level exists (None: it gains an entry, so the copy's time)."""

    path: str
    made: bool
    mode: int
    uid: int
    gid: int
    mtime: int | None
    pax: dict[str, str]


class NotStreamable(Exception):
    """The layer cannot be written without making the copy (the message says why)."""


def prefix_levels(merged: str, dest_dir: str, mode: int, owner: tuple[int, int]) -> list[Level] | str:
    """The levels of ``dest_dir`` (absolute, normalised) in the mounted snapshot ``merged``, top
    first, "/" left out; or a reason string when the layer cannot be streamed (a level is not a
    plain directory, or the destination holds entries). ``mode``/``owner``: what a made level gets."""
    parts = [p for p in dest_dir.split("/") if p]
    levels: list[Level] = []
    cur = merged.rstrip("/")
    exists = True
    for i, part in enumerate(parts):
        cur += "/" + part
        st = None
        if exists:
            try:
                st = os.lstat(short_path(cur))
            except FileNotFoundError:
                exists = False
        if st is None:
            if levels and not levels[-1].made and levels[-1].mode & stat.S_ISGID or not levels and _setgid(merged):
                # mkdir under a set-group-ID directory takes that directory's group (and the bit)
                return f"destination level /{'/'.join(parts[:i + 1])} is made in a set-group-ID directory"
            levels.append(Level("/".join(parts[:i + 1]), True, mode & 0o7777, owner[0], owner[1], None, {}))
            continue
        if not stat.S_ISDIR(st.st_mode):
            return f"destination level /{'/'.join(parts[:i + 1])} is not a directory"
        pax = _pax(short_path(cur), False)
        if isinstance(pax, str):
            return pax
        levels.append(Level("/".join(parts[:i + 1]), False, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                            int(st.st_mtime), pax))
    dest = merged if not parts else cur
    if exists and os.listdir(short_path(dest)):
        return f"destination {dest_dir} is not empty"
    # a kept level gets a new entry when the next one is made (or, for the destination, the items)
    out = []
    for i, lv in enumerate(levels):
        gains = i + 1 == len(levels) or levels[i + 1].made
        out.append(Level(lv.path, lv.made, lv.mode, lv.uid, lv.gid, None if gains else lv.mtime, lv.pax))
    return out


def _setgid(path: str) -> bool:
    return bool(os.lstat(short_path(path)).st_mode & stat.S_ISGID)


def _pax(where: int | str, symlink: bool) -> dict[str, str] | str:
    """SCHILY.xattr records of an entry as its copy holds them, or a reason string when one
    would not copy faithfully (outside ``user.``, or any on a symlink)."""
    follow = isinstance(where, int)
    try:
        names = os.listxattr(where, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out: dict[str, str] = {}
    for key in sorted(names):
        if key.startswith(_DROPPED):
            continue
        if symlink or not key.startswith("user."):
            return f"extended attribute {key}"
        try:
            value = os.getxattr(where, key, follow_symlinks=follow)
        except OSError:
            return f"extended attribute {key} unreadable"
        out["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    return out


def _clamp(mtime: int, epoch: int | None) -> int:
    return min(mtime, epoch) if epoch is not None else mtime


class _Sources:
    """Open source directories along the walk (O_NOFOLLOW at every level, as copytree)."""

    def __init__(self) -> None:
        self.root = ""
        self.root_fd = -1
        self.names: list[str] = []
        self.fds: list[int] = []

    def parent(self, item: Item, parts: list[str]) -> int:
        what = item.what or item.rel
        try:
            if item.root != self.root:
                self.close()
                self.root_fd = os.open(short_path(item.root), _DIR_FLAGS & ~os.O_NOFOLLOW)
                self.root = item.root
            want = parts[:-1]
            if len(want) > MAX_DEPTH:
                raise NotStreamable(f"{what}: deeper than {MAX_DEPTH} levels")
            keep = 0
            while keep < len(self.names) and keep < len(want) and self.names[keep] == want[keep]:
                keep += 1
            while len(self.fds) > keep:
                os.close(self.fds.pop())
                self.names.pop()
            for name in want[keep:]:
                top = self.fds[-1] if self.fds else self.root_fd
                self.fds.append(os.open(name, _DIR_FLAGS, dir_fd=top))
                self.names.append(name)
        except OSError as exc:
            raise SnapshotError(f"copy source {what}: {exc.strerror}") from None
        return self.fds[-1] if self.fds else self.root_fd

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        if self.root_fd >= 0:
            os.close(self.root_fd)
        self.root, self.root_fd, self.names, self.fds = "", -1, [], []


def _mapped(ranges: list[tuple[int, int]] | None, ident: int) -> bool:
    return ranges is None or any(lo <= ident < lo + n for lo, n in ranges)


def id_ranges(kind: str) -> list[tuple[int, int]] | None:
    """(first id, count) ranges of this process's user namespace map (``kind`` "uid" or "gid");
    None when unknown (then every id is taken as mapped)."""
    try:
        with open(f"/proc/self/{kind}_map") as fh:
            return [(int(f[0]), int(f[2])) for f in (line.split() for line in fh) if len(f) == 3]
    except (OSError, ValueError):
        return None


def write_layer(items: Iterable[Item], out: BinaryIO, levels: list[Level], *, owner: tuple[int, int] | None,
                now: int, epoch: int | None = None, socket_files: bool = False,
                ignore_if_empty: Collection[str] = ()) -> int:
    """Write the layer tar of ``items`` (copytree items, names under the destination whose
    ``levels`` ``prefix_levels`` gave) into ``out``; returns the number of entries. ``now``: the
    copy's time (whole seconds) for directories that gain entries. ``socket_files``: the copy
    makes a socket an empty file (copytree.Copier's, COPY --from): left to it (NotStreamable).
    ``ignore_if_empty``: absolute paths the commit drops when they are new and empty (a directory
    or a regular file: diff.filter_sandbox_paths): a directory or an empty file there is left to
    the copy (NotStreamable).
    Raises NotStreamable (the tar is then unfinished), SnapshotError for a source that cannot be
    read."""
    tw = TarStream(out)
    base = "/".join(lv.path for lv in levels[-1:])
    top = base + "/" if base else ""
    src = _Sources()
    uids, gids = id_ranges("uid"), id_ranges("gid")
    links: dict[tuple[int, int], tuple[str, int, int, int, int, dict[str, str]]] = {}
    prev: list[str] = []
    seen_once: set[str] = set()
    count = 0

    def head() -> None:
        for lv in levels:
            tw.add(tar_header(lv.path, DIRTYPE, lv.mode, lv.uid, lv.gid,
                              _clamp(now if lv.mtime is None else lv.mtime, epoch), pax=lv.pax))
    try:
        for item in items:
            dst = _parts(item.name, item.what)
            name = "/".join(dst)
            if item.once:
                if name in seen_once:
                    continue
                seen_once.add(name)
            if dst <= prev:
                raise NotStreamable(f"{name}: entries out of the layer's order")
            if dst[-1].startswith(WHITEOUT_PREFIX):  # the commit reads such a name as a whiteout
                raise NotStreamable(f"{name}: a whiteout's name")
            if not prev:
                head()
                count += len(levels)
            prev = dst
            sparts = _parts(item.rel, item.what)
            sdir = src.parent(item, sparts)
            what = item.what or item.rel
            try:
                st = os.stat(sparts[-1], dir_fd=sdir, follow_symlinks=False)
            except OSError as exc:
                raise SnapshotError(f"copy source {what}: {exc.strerror}") from None
            kind = stat.S_IFMT(st.st_mode)
            if kind == stat.S_IFSOCK:
                if socket_files:
                    raise NotStreamable(f"{name}: a socket")
                continue
            if kind in (stat.S_IFCHR, stat.S_IFBLK):
                raise NotStreamable(f"{name}: a device node")
            uid, gid = owner if owner is not None else ((st.st_uid, st.st_gid) if item.keep_owner else (0, 0))
            if not (_mapped(uids, uid) and _mapped(gids, gid)):
                raise NotStreamable(f"{name}: owner {uid}:{gid} outside the id map")
            mode = (item.mode if item.mode is not None else stat.S_IMODE(st.st_mode)) & 0o7777
            mtime = _clamp(item.mtime if item.mtime is not None else int(st.st_mtime), epoch)
            path = top + name
            if "/" + path in ignore_if_empty and (kind == stat.S_IFDIR or kind == stat.S_IFREG and not st.st_size):
                raise NotStreamable(f"{name}: /{path} is dropped by the commit when empty")
            if kind == stat.S_IFREG:
                count += _file(tw, sdir, sparts[-1], st, path, what, mode, uid, gid, mtime, links)
                continue
            if kind == stat.S_IFDIR:
                try:
                    fd = os.open(sparts[-1], _DIR_FLAGS, dir_fd=sdir)
                except OSError as exc:
                    raise SnapshotError(f"copy source {what}: {exc.strerror}") from None
                try:
                    pax = _pax(fd, False)
                finally:
                    os.close(fd)
                type_, linkname = DIRTYPE, ""
            else:
                pax = _pax(f"/proc/self/fd/{sdir}/{sparts[-1]}", kind == stat.S_IFLNK)
                if kind == stat.S_IFLNK:
                    type_, linkname, mode = SYMTYPE, os.readlink(sparts[-1], dir_fd=sdir), 0o777
                else:
                    type_, linkname = FIFOTYPE, ""
            if isinstance(pax, str):
                raise NotStreamable(f"{name}: {pax}")
            tw.add(tar_header(path, type_, mode, uid, gid, mtime, linkname=linkname, pax=pax))
            count += 1
        if not prev:  # nothing to copy: whether the made destination stays is the diff's to say
            raise NotStreamable("no entry to copy")  # (an empty mountpoint is dropped: diff.filter_sandbox_paths)
        tw.close()
    finally:
        src.close()
    return count


def _file(tw: TarStream, sdir: int, sname: str, st: os.stat_result, path: str, what: str, mode: int, uid: int,
          gid: int, mtime: int, links: dict[tuple[int, int], tuple[str, int, int, int, int, dict[str, str]]]) -> int:
    """One regular file: its body from the source (the opened fd checked to be the stat'ed
    inode, as copytree checks it), or a hard link to the item that had the same source inode."""
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and key in links:
        first, fmode, fuid, fgid, fmtime, fpax = links[key]
        tw.add(tar_header(path, LNKTYPE, fmode, fuid, fgid, fmtime, linkname=first, pax=fpax))
        return 1
    try:
        fd = os.open(sname, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=sdir)
    except OSError as exc:
        raise SnapshotError(f"copy source {what}: {exc.strerror}") from None
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != key:
            raise SnapshotError(f"copy source {what}: changed while being copied")
        pax = _pax(fd, False)
        if isinstance(pax, str):
            raise NotStreamable(f"{path}: {pax}")
        if st.st_nlink > 1:
            links[key] = (path, mode, uid, gid, mtime, pax)
        tw.add_file(tar_header(path, REGTYPE, mode, uid, gid, mtime, size=st.st_size, pax=pax), fd, st.st_size, what)
    finally:
        os.close(fd)
    return 1
