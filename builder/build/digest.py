"""Content digests of what a COPY/ADD or a RUN bind mount reads from the build
context: the files the step selects (after .dockerignore and --exclude), each
as its relative path, type and permission bits, size, link target, extended
attributes and content. Owners and mtimes are left out, as in BuildKit's
content checksums (``cache/contenthash``): COPY gives context files root
ownership, so the context's owner does not change the result.

Contents come through ``FileDigests``, so an unchanged file is not read twice.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Iterable, Iterator

from builder.build.cache import FileDigests
from builder.build.copier import Excluder, Source
from snapshotter import safepath


def _xattrs(path: str) -> list[tuple[str, str]]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    out = []
    for n in sorted(names):
        try:
            out.append((n, hashlib.sha256(os.getxattr(path, n, follow_symlinks=False)).hexdigest()))
        except OSError:
            continue
    return out


def entry_record(rel: str, path: Path, st: os.stat_result, files: FileDigests | None) -> bytes:
    """One file's line in a digest: path, type+mode, size, link target or content digest, xattrs.
    ``path`` may be longer than PATH_MAX (it is reached through directory fds)."""
    with safepath.reach(path) as reached:
        return _record(rel, path, reached, st, files)


def lstat(path: Path) -> os.stat_result:
    """os.lstat of a path of any length."""
    with safepath.reach(path) as reached:
        return os.lstat(reached)


def _record(rel: str, path: Path, reached: str, st: os.stat_result, files: FileDigests | None) -> bytes:
    parts = [rel, f"{st.st_mode:o}"]
    if stat.S_ISREG(st.st_mode):
        parts.append(str(st.st_size))
        if files is not None:
            parts.append(files.digest(path, st))
        else:
            h = hashlib.sha256()
            with open(reached, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            parts.append(h.hexdigest())
    elif stat.S_ISLNK(st.st_mode):
        parts.append(os.readlink(reached))
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        parts.append(f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}")
    parts.extend(f"{k}={v}" for k, v in _xattrs(reached))
    return os.fsencode("\0".join(parts)) + b"\n"  # names that are not UTF-8 stay bytes


def walk_selected(src: Source, excluded: Excluder | None, source_excluded: Excluder | None) -> Iterator[
        tuple[str, Path]]:
    """The entries of a directory source that a COPY writes (the rules of copier._walk_dir):
    .dockerignore on context-relative paths, with descent into an excluded directory only
    when an exception pattern may match below it; --exclude on source-relative paths."""
    base = src.path
    prefix = "" if src.rel in (".", "") else src.rel.rstrip("/") + "/"
    may_hold = getattr(excluded, "may_contain_exceptions", None)
    for dirpath, dirnames, filenames in safepath.walk(base):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, base)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep = []
        for d in dirnames:
            full = Path(dirpath) / d
            ctx_rel = prefix + rel_dir + d
            if source_excluded and source_excluded(rel_dir + d, True):
                continue
            if stat.S_ISLNK(lstat(full).st_mode):
                if not (excluded and excluded(ctx_rel, False)):
                    yield rel_dir + d, full
                continue
            hidden = bool(excluded and excluded(ctx_rel, True))
            if hidden and not (may_hold and may_hold(ctx_rel)):
                continue
            if not hidden:
                yield rel_dir + d, full
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            ctx_rel = prefix + rel_dir + f
            if excluded and excluded(ctx_rel, False) or source_excluded and source_excluded(rel_dir + f, False):
                continue
            yield rel_dir + f, Path(dirpath) / f


def context_digest(sources: Iterable[Source], excluded: Excluder | None, source_excluded: Excluder | None,
                   files: FileDigests) -> str:
    """sha256 hex over every selected entry of ``sources``, in order."""
    h = hashlib.sha256()
    for s in sources:
        h.update(os.fsencode(f"source\0{s.rel}\0{s.url or ''}\0{int(s.archive)}\0{s.mode}\n"))
        if not s.is_dir:
            h.update(entry_record(s.rel, s.path, lstat(s.path), files))
            continue
        for rel, path in walk_selected(s, excluded, source_excluded):
            h.update(entry_record(rel, path, lstat(path), files))
    return h.hexdigest()
