"""Digest of a subtree of a snapshot, computed inside the namespace (run through
``Runtime.call``): what ``COPY --from`` or ``RUN --mount=type=bind,from=`` reads
from another stage. Each entry counts with its path, type and mode, owner,
size, content, link target, device numbers and extended attributes, so a
source stage that was rebuilt but left these files identical gives the same
digest (a cache hit for the step that reads them)."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from builder.workspace import snapshots
from snapshotter import owners, safepath


def _record(rel: str, path: Path) -> bytes:
    st = os.lstat(path)
    uid, gid = owners.owner_of(str(path), st) if owners.recording() else (st.st_uid, st.st_gid)
    parts = [rel, f"{st.st_mode:o}", f"{uid}:{gid}"]
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with os.fdopen(owners.open_to_read(str(path)), "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        parts += [str(st.st_size), h.hexdigest()]
    elif stat.S_ISLNK(st.st_mode):
        parts.append(os.readlink(path))
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        parts.append(f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}")
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError:
        names = []
    for n in names:
        try:
            parts.append(f"{n}={hashlib.sha256(os.getxattr(path, n, follow_symlinks=False)).hexdigest()}")
        except OSError:
            continue
    return "\0".join(parts).encode() + b"\n"


def digest_paths(merged: Path, patterns: list[str]) -> str:
    """sha256 hex of what ``patterns`` (COPY --from sources, globs allowed) select under ``merged``."""
    h = hashlib.sha256()
    for src in snapshots._confined_sources(merged, patterns):
        h.update(f"source\0{src.rel}\n".encode())
        h.update(_record(".", src.path))
        if not src.is_dir:
            continue
        for dirpath, dirnames, filenames in safepath.walk(src.path):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                full = Path(dirpath) / name
                h.update(_record(os.path.relpath(full, src.path), full))
    return h.hexdigest()


def subtree_digest(root: str, driver: str, key: str, patterns: list[str]) -> str:
    """Mount snapshot ``key`` and digest what ``patterns`` select in it (see ``digest_paths``)."""
    merged = snapshots._driver(root, driver).mount(key)
    return digest_paths(merged, patterns)
