"""Digest of a subtree of a snapshot, computed inside the namespace (run through
``Runtime.call``): what ``COPY --from`` or ``RUN --mount=type=bind,from=`` reads
from another stage. Each entry counts with its path, type and mode, owner,
size, content, link target, device numbers and extended attributes, so a
source stage that was rebuilt but left these files identical gives the same
digest (a cache hit for the step that reads them).

Contents come through the stat-keyed ``FileDigests`` of the store when the
caller names its database: a file is keyed by its path in the rootfs, the
store's device and driver, and its size, mtime_ns, inode and ctime_ns. Under
overlay the merged view reports the inode and times of the layer's own file
(all layers are on the store's filesystem), and a published layer never
changes, so a stage rebuilt over the same lower layers re-reads only the files
its new layers hold. Only under kernel overlay: the native driver's rootfs is
new for every build (nothing would hit), and fuse-overlayfs may number inodes
its own way."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from builder.build.cache import FileDigests
from builder.workspace import snapshots
from snapshotter import owners, safepath


def _record(rel: str, path: str, files: FileDigests | None, where: str) -> bytes:
    """One entry's line; ``where``: the cache key's name of the file (see the module docstring)."""
    st = os.lstat(path)
    uid, gid = owners.owner_of(path, st) if owners.recording() else (st.st_uid, st.st_gid)
    parts = [rel, f"{st.st_mode:o}", f"{uid}:{gid}"]
    if stat.S_ISREG(st.st_mode):
        if files is not None:
            value = files.digest(path, st, name=where, opener=owners.open_to_read)
        else:
            h = hashlib.sha256()
            with os.fdopen(owners.open_to_read(path), "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            value = h.hexdigest()
        parts += [str(st.st_size), value]
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


def digest_paths(merged: Path, patterns: list[str], files: FileDigests | None = None, scope: str = "") -> str:
    """sha256 hex of what ``patterns`` (COPY --from sources, globs allowed) select under ``merged``.
    ``files``: the stat-keyed content digests to go through (None: every file is read), its keys
    named ``scope`` + the path in ``merged``."""
    h = hashlib.sha256()
    top = os.path.join(os.fspath(merged), "")
    for src in snapshots._confined_sources(merged, patterns):
        base = os.fspath(src.path)
        h.update(f"source\0{src.rel}\n".encode())
        h.update(_record(".", base, files, scope + os.path.relpath(base, merged)))
        if not src.is_dir:
            continue
        for dirpath, dirnames, filenames in safepath.walk(base):  # names joined, not relpath'd: 5k files a second
            dirnames.sort()
            rel_dir = dirpath[len(base) + 1:]
            prefix = rel_dir + "/" if rel_dir else ""
            where = scope + dirpath[len(top):] + "/" if dirpath.startswith(top) else scope
            for name in sorted(dirnames + filenames):
                h.update(_record(prefix + name, dirpath + "/" + name, files, where + name))
    return h.hexdigest()


def subtree_digest(root: str, driver: str, key: str, patterns: list[str], digests_db: str | None = None) -> str:
    """Mount snapshot ``key`` and digest what ``patterns`` select in it (see ``digest_paths``);
    contents through the stat-keyed digests in the SQLite file ``digests_db`` when given (overlay)."""
    merged = snapshots._driver(root, driver).mount(key)
    if digests_db is None or driver != "overlay":  # see the module docstring
        return digest_paths(merged, patterns)
    files = FileDigests(Path(digests_db))
    try:
        return digest_paths(merged, patterns, files, f"snapshot:{driver}:{os.stat(root).st_dev}:/")
    finally:
        files.close()
