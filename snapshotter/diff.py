"""Changes of a snapshot as an OCI layer tar (image-spec layer.md).

Both drivers produce a list of ``Change`` (a path and whether it is a whiteout,
an opaque directory or plain content) and hand it to ``write_tar``, which
emits entries sorted by path, every emitted path's ancestors too, hardlinks
kept (never for whiteout inodes), xattrs as PAX SCHILY.xattr records minus
overlay's own, ids as seen, and mtimes clamped to SOURCE_DATE_EPOCH when
asked, so the same change set gives the same bytes from either driver.
"""
from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Collection, Iterable

from snapshotter.apply import DROPPED_XATTR_PREFIXES, OPAQUE, WHITEOUT_PREFIX
from snapshotter.safepath import short_path


@dataclass(frozen=True)
class Change:
    path: str  # container path, absolute
    kind: str  # "content" | "whiteout" | "opaque" (an opaque dir: content + marker)


def _xattrs(host: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(host, follow_symlinks=False)
    except OSError:
        return out
    for name in sorted(names):
        if name.startswith(DROPPED_XATTR_PREFIXES):
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
        if old is None or old == (st.st_mode, st.st_uid, st.st_gid):
            dropped.add(c.path)
    return [c for c in kept if c.path not in dropped]


def write_tar(root: Path, changes: Iterable[Change], out: BinaryIO, *, source_date_epoch: int | None = None) -> int:
    """Write the changes found under ``root`` as a layer tar; returns the number of entries."""
    entries: dict[str, Change] = {}
    for c in changes:
        entries[c.path] = c
        for a in _ancestors(c.path):
            entries.setdefault(a, Change(a, "content"))
    links: dict[tuple[int, int], str] = {}
    count = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tw:
        for path in sorted(entries, key=lambda p: p.split("/")):
            c = entries[path]
            name = path.lstrip("/")
            host = short_path(root / name)  # names up to the kernel's limits: through a dir fd
            if c.kind == "whiteout":
                parent, base = os.path.split(name)
                ti = tarfile.TarInfo(os.path.join(parent, WHITEOUT_PREFIX + base))
                ti.mtime = _clamp(0, source_date_epoch)
                ti.mode = 0o644
                tw.addfile(ti)
                count += 1
                continue
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                continue
            header = _header(name, host, st, source_date_epoch)
            if header is None:
                continue
            ti = header
            if ti.isreg() and st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in links:
                    ti.type, ti.linkname, ti.size = tarfile.LNKTYPE, links[key], 0
                    tw.addfile(ti)
                    count += 1
                    continue
                links[key] = name
            if ti.isreg():
                with open(host, "rb") as fh:
                    tw.addfile(ti, fh)
            else:
                tw.addfile(ti)
            count += 1
            if c.kind == "opaque":
                marker = tarfile.TarInfo(f"{name}/{OPAQUE}")
                marker.mtime = _clamp(0, source_date_epoch)
                marker.mode = 0o644
                tw.addfile(marker)
                count += 1
    return count


def _clamp(mtime: float, epoch: int | None) -> int:
    m = int(mtime)
    return min(m, epoch) if epoch is not None else m


def _header(name: str, host: str, st: os.stat_result, epoch: int | None) -> tarfile.TarInfo | None:
    mode = st.st_mode
    ti = tarfile.TarInfo(name)
    ti.mode = stat.S_IMODE(mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = _clamp(st.st_mtime, epoch)
    if stat.S_ISREG(mode):
        ti.type, ti.size = tarfile.REGTYPE, st.st_size
    elif stat.S_ISDIR(mode):
        ti.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(host)
    elif stat.S_ISFIFO(mode):
        ti.type = tarfile.FIFOTYPE
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        if os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0:
            return None  # an overlay whiteout reached by a walk; the caller reports it as a deletion
        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        return None  # sockets do not belong in layers
    ti.pax_headers = _xattrs(host)
    return ti
