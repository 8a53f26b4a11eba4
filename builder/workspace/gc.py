"""Garbage collection and crash recovery over a whole store: blobs, unpacked layers, snapshots,
build cache entries, cache-mount directories and temporary files.

What is live (never removed):
* blobs: reached from an image record, a working container's layers, or another live process's
  lease (builder.image.lease);
* unpacked layers (``snapshots/<driver>/layers/<id>``): an image's diff_id, a working
  container's layer, a layer under a kept snapshot, or a layer in a live lease;
* snapshots (``snapshots/<driver>/containers/<key>``): a working container's, or in a live lease;
* build cache entries (``cache/<key>``): kept by ``rmi`` while their layer blob stays (entries
  without a layer while any image stays); ``prune`` removes all but those a live build is using,
  and the digest memos (``digests.db``) when no other bale process is alive;
* cache mounts (``cache-mounts/<id>``): removed by ``prune`` only, and only when no other bale
  process is alive on the store (a running build's mounts are not leased individually);
* temp dirs (``tmp/<lease id>``): their lease is live.

Every decision is taken under the store's exclusive lock, and what goes is renamed out of the way
(``.del-*``, flocked) before the lock is let go; the removal itself runs afterwards in the user
namespace (files of subordinate ids), so no bale process waits on it. A kill at any point leaves
``.del-*`` trees that the next ``recover`` removes.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import BaleError
from builder.image.lease import LeaseInfo, current_lease_id, lease_for, read_leases, stale_new_files
from builder.image.oci import parse_config, parse_manifest
from builder.log import log
from builder.image.store import Store
from builder.workspace.container import ContainerRegistry
from snapshotter.drivers import get_driver, sweep_dir
from snapshotter.rmtree import remove_tree

if TYPE_CHECKING:
    from builder.image.store import Store
    from builder.workspace.runtime import Runtime

DRIVER_NAMES = ("overlay", "fuse-overlayfs", "native")
#: the build cache's digest memos (builder.build.cache: SQLite with -wal/-shm, subtree digests),
#: in the store root or under cache/ as bale versions had them
MEMOS = ("digests.db", "filedigests.db", "trees")
#: age after which a build cache entry's temp file is a killed writer's
TMP_GRACE_S = 600.0


@dataclass
class Freed:
    """What a collection removed: counts per kind and bytes in all."""

    images: int = 0
    blobs: int = 0
    layers: int = 0
    snapshots: int = 0
    cache_entries: int = 0
    cache_mounts: int = 0
    temp: int = 0
    bytes: int = 0

    def line(self) -> str:
        """One line for humans, e.g. ``freed 1 image, 3 blobs, ... (2.1 MB)``."""
        parts = [(self.images, "image"), (self.blobs, "blob"), (self.layers, "unpacked layer"),
                 (self.snapshots, "snapshot"), (self.cache_entries, "cache entry"),
                 (self.cache_mounts, "cache mount"), (self.temp, "temp dir")]
        words = ", ".join(f"{n} {_plural(w, n)}" for n, w in parts)
        return f"freed {words} ({_human(self.bytes)})"


def _plural(word: str, n: int) -> str:
    if n == 1:
        return word
    return word[:-1] + "ies" if word.endswith("y") else word + "s"


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


class _Staged:
    """Trees renamed to ``.del-*`` under the store lock, each held by an flock until removed."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._fds: list[int] = []

    def add(self, path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError:  # a plain file: removed at once
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            gone = path.with_name(f".del-{path.name[-24:]}-{secrets.token_hex(4)}")
            os.rename(path, gone)
        except OSError:
            os.close(fd)
            return False
        self._fds.append(fd)
        self.paths.append(str(gone))
        return True

    def remove(self, rt: "Runtime | None") -> int:
        """Remove the staged trees (in the runtime's namespace); returns the bytes they held."""
        try:
            if not self.paths:
                return 0
            if rt is None:
                return remove_trees(self.paths)
            return int(rt.call(remove_trees, self.paths))
        finally:
            for fd in self._fds:
                os.close(fd)
            self._fds = []


def remove_trees(paths: list[str]) -> int:
    """rm -rf of each path at any depth, tolerant of a concurrent remover; returns the bytes removed."""
    total = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            total += remove_tree(path)
    return total


def _unlink(p: Path) -> int:
    try:
        size = p.lstat().st_size
        p.unlink()
        return size
    except OSError:
        return 0


def sweep_all(store_root: str) -> int:
    """Work directories of killed writers (see snapshotter.drivers.sweep_dir) under the store's
    tmp/, cache-mounts/ and every driver's layers/ and containers/ (run it in the namespace)."""
    root = Path(store_root)
    n = sweep_dir(root / "tmp") + sweep_dir(root / "cache-mounts")
    for name in DRIVER_NAMES:
        if (root / "snapshots" / name).is_dir():
            n += get_driver(name, root / "snapshots").sweep()
    return n


def _has_work_dirs(root: Path) -> bool:
    dirs = [root / "tmp", root / "cache-mounts"] + [root / "snapshots" / d / sub for d in DRIVER_NAMES
                                                    for sub in ("layers", "containers")]
    for d in dirs:
        with contextlib.suppress(FileNotFoundError):
            if any(n.startswith((".del-", ".tmp-", ".new-")) for n in os.listdir(d)):
                return True
    return False


def _unlocked(path: Path) -> bool:
    """Whether nobody holds the lease file's flock (its process is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _in_namespace(rt: "Runtime | None", fn: Any, *args: Any) -> Any:
    return fn(*args) if rt is None else rt.call(fn, *args)


def _stale_leftovers(store: "Store", leases: list[LeaseInfo], keep_keys: set[str], staged: _Staged,
                     freed: Freed) -> None:
    """Stage what dead processes left: their snapshots (unless a working container or a live lease
    has them), their temp dirs, temp dirs without any lease, and their lease files."""
    root = store.root
    live_snapshots = set().union(*(l.get("snapshot") for l in leases if l.live))
    own = current_lease_id(root)
    for info in leases:
        if info.live:
            continue
        for entry in sorted(info.get("snapshot")):
            driver, _, key = entry.partition("/")
            if driver in DRIVER_NAMES and key and not key.startswith(".") and "/" not in key \
                    and key not in keep_keys and entry not in live_snapshots:
                if staged.add(root / "snapshots" / driver / "containers" / key):
                    freed.snapshots += 1
    known = {l.id for l in leases if l.live} | ({own} if own else set())
    for name in os.listdir(root / "tmp"):
        if name.startswith(".") or name in known:
            continue
        if staged.add(root / "tmp" / name):
            freed.temp += 1
    for info in leases:
        if not info.live:
            with contextlib.suppress(FileNotFoundError):
                info.path.unlink()
    for path in stale_new_files(root / "leases"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def recover(store: "Store", rt: "Runtime | None") -> Freed:
    """Remove what killed bale processes left in the store: the snapshots and temp files of stale
    leases, half-built or half-removed layers and snapshots. Never touches what a live process
    or a working container uses. Cheap when there is nothing to do (one directory listing)."""
    root = store.root
    freed = Freed()
    leases_dir = root / "leases"
    names = os.listdir(leases_dir) if leases_dir.is_dir() else []
    own = current_lease_id(root)
    stale = [n for n in names if n != f"{own}.lease" and (n.startswith(".") or _unlocked(leases_dir / n))]
    tmp_names = [n for n in os.listdir(root / "tmp")] if (root / "tmp").is_dir() else []
    orphan_tmp = [n for n in tmp_names if f"{n}.lease" not in names and not n.startswith(".")]
    if not stale and not orphan_tmp and not _has_work_dirs(root):
        return freed  # the common case: no lock taken, nothing forked
    staged = _Staged()
    with store.lock():
        leases = read_leases(leases_dir)
        keep = {c.key for c in ContainerRegistry(root).all()}
        _stale_leftovers(store, leases, keep, staged, freed)
    freed.bytes += staged.remove(rt)
    _in_namespace(rt, sweep_all, str(root))
    if freed.snapshots or freed.temp:
        log.info("removed what killed bale processes left: %d snapshots, %d temp dirs", freed.snapshots, freed.temp)
    return freed


def collect(store: "Store", rt: "Runtime | None", *, build_cache: bool = False, cache_mounts: bool = False,
            freed: Freed | None = None) -> Freed:
    """Remove everything nothing live reaches (see the module doc). ``build_cache``: also the build
    cache entries no running build uses (``prune``); ``cache_mounts``: also the RUN cache mounts,
    when no other bale process is alive. Returns what went."""
    root = store.root
    freed = freed or Freed()
    staged = _Staged()
    with store.lock():
        own = current_lease_id(root)
        leases = read_leases(root / "leases")  # this process's own counts as live (a library caller mid-work)
        live = [l for l in leases if l.live]
        others_live = [l for l in live if l.id != own]
        lease_layers = set().union(*(l.get("layer") for l in live))
        lease_snapshots = set().union(*(l.get("snapshot") for l in live))
        lease_blobs = set().union(*(l.get("blob") for l in live))
        containers = ContainerRegistry(root).all()
        keep_keys = {c.key for c in containers}
        _stale_leftovers(store, leases, keep_keys, staged, freed)
        for name in ContainerRegistry(root).unsaved():
            with contextlib.suppress(OSError):
                remove_tree(root / "containers" / name)

        # blobs
        removed = store.gc_sized(keep={l.digest for c in containers for l in c.layers})
        freed.blobs += len(removed)
        freed.bytes += sum(size for _, size in removed)

        # images' layers (diff_ids), read from what stays
        records = store.images()
        image_layers: set[str] = set()
        for rec in records:
            with contextlib.suppress(Exception):  # a corrupt record keeps nothing; reported elsewhere
                man = parse_manifest(store.read_blob(rec.manifest_digest))
                cfg = parse_config(store.read_blob(man.config.digest))
                image_layers |= {d.split(":", 1)[1] for d in cfg.diff_ids}

        # build cache entries (and, for prune with nobody else alive, the digest memos beside them)
        cache_dir = root / "cache"
        if cache_dir.is_dir():
            for p in sorted(cache_dir.iterdir()):
                if p.name.startswith("."):  # an entry being written; a killed writer's after 10 minutes
                    with contextlib.suppress(OSError):
                        if time.time() - p.lstat().st_mtime > TMP_GRACE_S:
                            p.unlink()
                    continue
                if p.is_dir() or p.name.startswith(MEMOS):
                    if build_cache and not others_live:
                        freed.bytes += remove_trees([str(p)]) if p.is_dir() else _unlink(p)
                    continue
                try:
                    entry = json.loads(p.read_text())
                    layer = (entry.get("layer") or {}).get("digest")
                except (OSError, ValueError, AttributeError):
                    layer = None
                    entry = None
                if entry is None:
                    drop = True
                elif build_cache:
                    drop = layer not in lease_blobs if layer else True
                else:
                    drop = (not store.blob_path(layer).exists()) if layer else not records
                if drop:
                    with contextlib.suppress(OSError):
                        freed.bytes += p.stat().st_size
                        p.unlink()
                        freed.cache_entries += 1

        if build_cache and not others_live:
            for p in sorted(root.glob("digests.db*")):
                freed.bytes += _unlink(p)

        # snapshots, then the layers they and everything else keep
        drivers_root = root / "snapshots"
        kept_snapshot_layers: set[str] = set()
        for driver in DRIVER_NAMES:
            cdir = drivers_root / driver / "containers"
            if not cdir.is_dir():
                continue
            for key in sorted(os.listdir(cdir)):
                if key.startswith("."):
                    continue
                if key in keep_keys or f"{driver}/{key}" in lease_snapshots:
                    with contextlib.suppress(OSError, ValueError):
                        kept_snapshot_layers |= set(json.loads((cdir / key / "layers.json").read_text()))
                    continue
                if staged.add(cdir / key):
                    freed.snapshots += 1
        live_layers = image_layers | lease_layers | kept_snapshot_layers | {
            l.layer_id for c in containers for l in c.layers}
        for driver in DRIVER_NAMES:
            ldir = drivers_root / driver / "layers"
            if not ldir.is_dir():
                continue
            for lid in sorted(os.listdir(ldir)):
                if lid.startswith(".") or lid in live_layers:
                    continue
                if staged.add(ldir / lid):
                    freed.layers += 1

        # cache mounts: only when nobody else is alive (a running build's mounts are not leased)
        mounts_dir = root / "cache-mounts"
        if cache_mounts and not others_live and mounts_dir.is_dir():
            for name in sorted(os.listdir(mounts_dir)):
                if not name.startswith(".") and staged.add(mounts_dir / name):
                    freed.cache_mounts += 1
    freed.bytes += staged.remove(rt)
    _in_namespace(rt, sweep_all, str(root))
    return freed


_recovered: set[str] = set()


def recover_once(rt: "Runtime") -> None:
    """``recover`` the runtime's store once per process (when its first Runtime is made), after
    taking this process's lease. A failure is a warning: it must not stop the command."""
    key = os.path.realpath(rt.store_root)
    if key in _recovered:
        return
    _recovered.add(key)
    try:
        store = Store(rt.store_root)
        if lease_for(store.root).read_only:
            return  # nothing this process could remove
        recover(store, rt)
    except (OSError, BaleError) as exc:
        log.warning("could not clean up after killed bale processes: %s", exc)
