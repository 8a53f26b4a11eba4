"""Changes of a snapshot as an OCI layer tar (image-spec layer.md).

Both drivers produce a list of ``Change`` (a path and whether it is a whiteout,
an opaque directory or plain content) and hand it to ``write_tar``, which
emits entries sorted by path, every emitted path's ancestors too, hardlinks
kept (never for whiteout inodes), xattrs as PAX SCHILY.xattr records minus
overlay's own, ids as seen (the recorded ones where owners.py records them),
and mtimes clamped to SOURCE_DATE_EPOCH when asked, so the same change set
gives the same bytes from either driver.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Collection, Iterable

from snapshotter import owners
from snapshotter.apply import DROPPED_XATTR_PREFIXES, OPAQUE, WHITEOUT_PREFIX
from snapshotter.safepath import short_path
from snapshotter.tarwriter import BLKTYPE, CHRTYPE, DIRTYPE, FIFOTYPE, LNKTYPE, REGTYPE, SYMTYPE, TarStream, tar_header


@dataclass(frozen=True)
class Change:
    path: str  # container path, absolute
    kind: str  # "content" | "whiteout" | "opaque" (an opaque dir: content + marker)


def pax_xattrs(host: str, drop: tuple[str, ...] = DROPPED_XATTR_PREFIXES) -> dict[str, str]:
    """``host``'s extended attributes (symlinks not followed) as PAX records, sorted by name:
    "SCHILY.xattr.NAME" -> the value's bytes surrogate-escaped, names starting with one of
    ``drop`` left out (by default overlay's and bale's own). Attributes that cannot be listed or
    read are left out."""
    out: dict[str, str] = {}
    try:
        names = os.listxattr(host, follow_symlinks=False)
    except OSError:
        return out
    for name in sorted(names):
        if name.startswith(drop):
            continue
        try:
            out["SCHILY.xattr." + name] = os.getxattr(host, name, follow_symlinks=False).decode(
                "utf-8", "surrogateescape")
        except OSError:
            continue
    return out


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def filter_sandbox_paths(changes: list[Change], root: Path, ignore_if_empty: Collection[str],
                         before: Callable[[str], tuple[int, int, int] | None]) -> list[Change]:
    """Drop mountpoints the sandbox made (empty, absent before), and directories that changed only
    to hold them (new ones, or old ones whose mode and owner are as before).
    ``before(path)`` gives (mode, uid, gid) of a path before the step, or None."""
    ignore = set(ignore_if_empty)
    dropped = set()
    for c in changes:
        if c.kind == "content" and c.path in ignore and before(c.path) is None:
            host = short_path(root / c.path.lstrip("/"))
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                continue
            if (stat.S_ISDIR(st.st_mode) and not os.listdir(host)) or (stat.S_ISREG(st.st_mode) and st.st_size == 0):
                dropped.add(c.path)
    if not dropped:
        return changes
    kept = [c for c in changes if c.path not in dropped]
    # deepest first, so a parent sees whether its children stayed
    for c in sorted(kept, key=lambda c: -c.path.count("/")):
        if c.kind != "content" or not any(d.startswith(c.path + "/") for d in dropped):
            continue
        if any(k.path.startswith(c.path + "/") for k in kept if k.path not in dropped):
            continue
        host = short_path(root / c.path.lstrip("/"))
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            continue
        old = before(c.path)
        uid, gid = owners.owner_of(host, st) if owners.recording() else (st.st_uid, st.st_gid)
        if old is None or old == (st.st_mode, uid, gid):
            dropped.add(c.path)
    return [c for c in kept if c.path not in dropped]


def write_tar(root: Path, changes: Iterable[Change], out: BinaryIO, *, source_date_epoch: int | None = None) -> int:
    """Write the changes found under ``root`` as a layer tar into ``out`` (snapshotter.tarwriter:
    tarfile's PAX-format bytes); returns the number of entries. SnapshotError when a file shrinks
    while it is written, OSError when an entry cannot be read."""
    entries: dict[str, Change] = {}
    for c in changes:
        entries[c.path] = c
        for a in _ancestors(c.path):
            entries.setdefault(a, Change(a, "content"))
    links: dict[tuple[int, int], str] = {}
    count = 0
    top = os.fspath(root).rstrip("/") + "/"
    marker_mtime = _clamp(0, source_date_epoch)
    tw = TarStream(out)
    for path in sorted(entries, key=lambda p: p.split("/")):
        c = entries[path]
        name = path.lstrip("/")
        host = short_path(top + name)  # names up to the kernel's limits: through a dir fd
        if c.kind == "whiteout":
            parent, base = os.path.split(name)
            tw.add(tar_header(os.path.join(parent, WHITEOUT_PREFIX + base), REGTYPE, 0o644, 0, 0, marker_mtime))
            count += 1
            continue
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            continue
        fields = _fields(host, st)
        if fields is None:
            continue
        type_, linkname, devmajor, devminor, pax = fields
        mode, mtime = stat.S_IMODE(st.st_mode), _clamp(st.st_mtime, source_date_epoch)
        # bale's uid owns every file on disk where owners are recorded (ptrace isolation): the record goes in
        uid, gid = owners.owner_of(host, st) if owners.recording() else (st.st_uid, st.st_gid)
        if type_ == REGTYPE and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in links:
                tw.add(tar_header(name, LNKTYPE, mode, uid, gid, mtime, linkname=links[key], pax=pax))
                count += 1
                continue
            links[key] = name
        if type_ == REGTYPE:
            header = tar_header(name, REGTYPE, mode, uid, gid, mtime, size=st.st_size, pax=pax)
            fd = owners.open_to_read(host, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                tw.add_file(header, fd, st.st_size, path)
            finally:
                os.close(fd)
        else:
            tw.add(tar_header(name, type_, mode, uid, gid, mtime, linkname=linkname,
                              devmajor=devmajor, devminor=devminor, pax=pax))
        count += 1
        if c.kind == "opaque":
            tw.add(tar_header(f"{name}/{OPAQUE}", REGTYPE, 0o644, 0, 0, marker_mtime))
            count += 1
    tw.close()
    return count


def _clamp(mtime: float, epoch: int | None) -> int:
    m = int(mtime)
    return min(m, epoch) if epoch is not None else m


def _fields(host: str, st: os.stat_result) -> tuple[bytes, str, int, int, dict[str, str]] | None:
    """(tar type, link target, device major, minor, PAX records) of an entry, or None for what
    a layer does not hold (sockets; a 0:0 device, an overlay whiteout reached by a walk, which
    the caller reports as a deletion)."""
    mode = st.st_mode
    linkname, major, minor = "", 0, 0
    if stat.S_ISREG(mode):
        type_ = REGTYPE
    elif stat.S_ISDIR(mode):
        type_ = DIRTYPE
    elif stat.S_ISLNK(mode):
        type_, linkname = SYMTYPE, os.readlink(host)
    elif stat.S_ISFIFO(mode):
        type_ = FIFOTYPE
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        if major == 0 and minor == 0:
            return None
        type_ = CHRTYPE if stat.S_ISCHR(mode) else BLKTYPE
    else:
        return None
    return type_, linkname, major, minor, pax_xattrs(host)
