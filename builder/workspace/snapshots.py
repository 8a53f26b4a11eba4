"""Snapshot work as it runs inside the sandbox's namespace.

Every function here is module-level and takes plain data, so ``Runtime.call``
can pickle it into the user-namespace child: there the process is root over
the subordinate id range, so layers owned by many users unpack, diff and
clean up with their owners intact.
"""
from __future__ import annotations

import os
import queue
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable, Generator, Iterator

import builder.image.lease  # noqa: F401
import builder.image.storelock  # noqa: F401
# Imported here, before any fork: the functions below run in forked children, and a child that
# imports a module another thread of the parent was importing at the fork (copier's feeder thread
# imports snapshotter.tarlimits) waits forever on that module's import lock.
import snapshotter.api  # noqa: F401  (drivers, apply, diff, tarlimits)
import subprocess  # noqa: F401  (the fuse-overlayfs driver's mount)
import builder.image.compress  # noqa: F401  (StoreBlobOpener's decompression)
from builder.build import copier
from builder.build.copier import resolve_chown, resolve_in_root
from builder.errors import ContainerError
# the snapshot's making and lease records (light enough for `bale from scratch`): re-exported
from builder.workspace.prepare import _driver as _driver, _leased as _leased, prepare as prepare
from snapshotter.apply import apply_tar
from snapshotter.copylayer import NotStreamable, prefix_levels, write_layer
from snapshotter.copytree import Copier, Item, copy_items, read_items
from snapshotter import owners
from snapshotter.errors import SnapshotError
from snapshotter.safepath import mkdir_all, secure_join

#: mountpoints the sandbox may create; dropped from a diff when still empty
SANDBOX_PATHS = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run",
                 "/dev/shm", "/dev/pts")


class SnapshotRootfs:
    """RootfsProvider for the sandbox: mounts the container's snapshot in the
    current (namespace child's) mount namespace and returns the merged root."""

    def __init__(self, root: str, driver: str, key: str, extra: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        self.root, self.driver, self.key = root, driver, key
        self.extra = list(extra)  # (driver, key) of other snapshots RUN mounts read from

    def setup(self) -> Path:
        for driver, key in self.extra:
            _driver(self.root, driver).mount(key)
        return Path(_driver(self.root, self.driver).mount(self.key))


def snapshot_root_path(root: str, driver: str, key: str) -> str:
    """Where ``mount(key)`` puts the snapshot's root (for RUN --mount=from=)."""
    sub = "rootfs" if driver == "native" else "merged"
    return str(Path(root) / driver / "containers" / key / sub)


def ensure_layers(root: str, driver: str, layers: list[tuple[str, Callable[[], BinaryIO]]]) -> None:
    """Unpack every (layer_id, opener) not unpacked yet (shared by all images)."""
    d = _driver(root, driver)
    missing = _leased(root, "layer", [lid for lid, _ in layers],
                      lambda: {lid for lid, _ in layers if not d.has_layer(lid)})
    for layer_id, opener in layers:
        if layer_id in missing:
            d.ensure_layer(layer_id, opener)


def commit(root: str, driver: str, key: str, layer_id: str) -> None:
    """The snapshot's changes become layer ``layer_id`` under it; the next step starts clean."""
    _leased(root, "layer", [layer_id])
    _driver(root, driver).commit(key, layer_id)


def remove(root: str, driver: str, key: str) -> None:
    _driver(root, driver).remove(key)


def diff_to_fd(fd: int, root: str, driver: str, key: str, ignore: list[str], epoch: int | None) -> None:
    """Write the snapshot's changes as an uncompressed tar into ``fd``."""
    d = _driver(root, driver)
    with os.fdopen(os.dup(fd), "wb", buffering=1 << 20) as out:
        d.diff(key, out, ignore_if_empty=tuple(ignore), source_date_epoch=epoch)


def mounted_path_kind(root: str, driver: str, key: str, path: str) -> str | None:
    """"dir", "file" or None for ``path`` inside the container, resolved with chroot semantics."""
    merged = _driver(root, driver).mount(key)
    p = secure_join(merged, path)
    if p.is_dir():
        return "dir"
    return "file" if os.path.lexists(p) else None


def resolve_owner(root: str, driver: str, key: str, user: str) -> tuple[int, int]:
    """uid, gid for a --chown USER[:GROUP] using the container's own passwd and group files
    (BuildKit's rules: builder.build.copier.resolve_chown)."""
    return resolve_chown(_driver(root, driver).mount(key), user)


def _dir_mode(chmod: int | None) -> int:
    """Directories a COPY makes get --chmod's mode when given, else 0755 (fsutil copy/copy.go:85-89
    and 169-173: perm = *ci.Mode)."""
    return chmod & 0o7777 if chmod is not None else 0o755


def _copy_target(root: str, driver: str, key: str, dest_dir: str, owner: tuple[int, int] | None,
                 user: str | None, mkdir: str, chmod: int | None) -> tuple[Path, tuple[int, int] | None]:
    """Where a COPY/ADD lands in the mounted container, and its owner: ``mkdir`` (default
    ``dest_dir``) is made first, every missing level owned by the --chown owner (``owner``, or
    ``user`` resolved in the container's /etc/passwd and /etc/group); (target directory, owner)."""
    merged = _driver(root, driver).mount(key)
    if owner is None and user:
        owner = resolve_chown(merged, user)
    _mkdir_all(merged, mkdir or dest_dir, owner, _dir_mode(chmod))
    return secure_join(merged, dest_dir), owner


def apply_from_fd(fd: int, root: str, driver: str, key: str, dest_dir: str, owner: tuple[int, int] | None,
                  user: str | None, mkdir: str = "", chmod: int | None = None) -> list[str]:
    """Extract the COPY/ADD tar read from ``fd`` under ``dest_dir`` of the mounted container.
    ``mkdir`` (default ``dest_dir``) is made first, every missing level owned by the --chown owner
    (``owner``, or ``user`` resolved in the container); returns warnings."""
    target, owner = _copy_target(root, driver, key, dest_dir, owner, user, mkdir, chmod)
    with os.fdopen(os.dup(fd), "rb", buffering=1 << 20) as src:
        result = apply_tar(src, target, whiteout_format="native", chown=owner, strict=True)
    return list(result.warnings)


def copy_from_fd(fd: int, root: str, driver: str, key: str, dest_dir: str, owner: tuple[int, int] | None,
                 user: str | None, mkdir: str = "", chmod: int | None = None) -> list[str]:
    """The direct COPY: entries (copytree.encode_item lines read from ``fd``) copied from their
    source directories under ``dest_dir`` of the mounted container, no tar in between. ``mkdir``
    (default ``dest_dir``) is made first, every missing level owned by the --chown owner
    (``owner``, or ``user`` resolved in the container); returns warnings (logged where they happen)."""
    target, owner = _copy_target(root, driver, key, dest_dir, owner, user, mkdir, chmod)
    with os.fdopen(os.dup(fd), "rb", buffering=1 << 20) as src:
        warnings = copy_items(read_items(src), target, owner)
    return warnings


#: the line ending a plan streamed to copy_layer_to_fd (a plan cut short by a failed walk has none)
PLAN_END = b"end\n"


def copy_layer_to_fd(out_fd: int, items_fd: int, root: str, driver: str, key: str, dest_dir: str,
                     owner: tuple[int, int] | None, user: str | None, chmod: int | None, now: int,
                     epoch: int | None) -> str:
    """The layer a direct COPY into this clean snapshot would commit, written as an uncompressed
    tar into ``out_fd`` straight from the sources (snapshotter.copylayer), the snapshot left as it
    was: the plan's entries are read from ``items_fd`` (copytree.encode_item lines ended by
    PLAN_END), ``dest_dir`` is where they land (made as COPY makes it: mode from ``chmod``, the
    --chown owner ``owner`` or ``user`` resolved in the container). Returns "" when the whole tar
    was written, else why it could not be (the tar is then unfinished: the caller discards it and
    copies instead). SnapshotError for a source that cannot be read."""
    merged = _driver(root, driver).mount(key)
    if owner is None and user:
        owner = resolve_chown(merged, user)
    levels = prefix_levels(str(merged), dest_dir, _dir_mode(chmod), owner or (os.geteuid(), os.getegid()))
    if isinstance(levels, str):
        return levels
    try:
        with os.fdopen(os.dup(items_fd), "rb", buffering=1 << 16) as src, \
                os.fdopen(os.dup(out_fd), "wb", buffering=1 << 20) as out:
            write_layer(_plan_until_end(src), out, levels, owner=owner, now=now, epoch=epoch,
                        ignore_if_empty=SANDBOX_PATHS)
    except NotStreamable as exc:
        return str(exc) or "not streamable"
    return ""


def _plan_until_end(src: BinaryIO) -> Iterator[Item]:
    ended = False

    def lines() -> Iterator[bytes]:
        nonlocal ended
        for line in src:
            if line == PLAN_END:
                ended = True
                return
            yield line
    yield from read_items(lines())  # type: ignore[arg-type]
    if not ended:
        raise NotStreamable("the copy plan ended early")


def _mkdir_all(merged: Path, path: str, owner: tuple[int, int] | None = None, mode: int = 0o755) -> list[str]:
    """mkdir -p of a container path confined to the rootfs, through symlinks whose targets are
    missing (issue 8 class 9); new levels get ``mode`` and ``owner``. A file in the way is an error."""
    try:
        return mkdir_all(merged, path, mode=mode, owner=owner)
    except SnapshotError as exc:
        raise ContainerError(str(exc)) from None
    except OSError as exc:
        raise ContainerError(f"cannot create directory {path}: {exc.strerror}") from None


def make_dirs(root: str, driver: str, key: str, path: str, owner: tuple[int, int] | None = None,
              user: str | None = None) -> bool:
    """mkdir -p inside the container (WORKDIR); True if anything was created. Every directory it
    creates gets ``owner``, or the ids of ``user`` (the image's USER, e.g. "1234:5678" or a name)
    resolved as BuildKit's WORKDIR does (dockerfile2llb/convert.go:1543-1546: Mkdir WithParents
    WithUser(config.User), mode 0755)."""
    merged = _driver(root, driver).mount(key)
    if owner is None and user:
        owner = resolve_chown(merged, user)
    return bool(_mkdir_all(merged, path, owner))


def apply_layer(root: str, driver: str, key: str, opener: Callable[[], BinaryIO]) -> None:
    """Apply a layer tar over the mounted snapshot (deletions performed, as a rootfs sees them)."""
    merged = _driver(root, driver).mount(key)
    with opener() as src:
        apply_tar(src, merged, whiteout_format="native")


def _confined_sources(root: Path, patterns: list[str]) -> list[Any]:
    """COPY --from sources inside another rootfs: wildcards as BuildKit resolves them (Go's
    filepath.Match, dot-files included), symlinks resolved within it; owners kept."""
    sources = resolve_in_root(root, patterns, where="in the source stage or image")
    for s in sources:
        s.keep_owner = True
        s.socket_files = True
    return sources


def copy_between(src_root: str, src_driver: str, src_key: str, dst_root: str, dst_driver: str, dst_key: str,
                 patterns: list[str], dest: str, chmod: int | None, chown: str | None,
                 keep_owner: bool = True) -> None:
    """COPY --from: sources from one mounted snapshot into another, in the namespace. Modes and
    xattrs are kept, and owners with ``keep_owner`` (a Dockerfile's COPY --from: fsutil copy is
    ``cp -a``; ``bale copy --from`` gives root's as buildah copy does) unless --chown/--chmod say
    otherwise; directories it creates belong to the --chown owner. Warnings are logged."""
    src = _driver(src_root, src_driver).mount(src_key)
    dst = _driver(dst_root, dst_driver).mount(dst_key)
    sources = _confined_sources(src, patterns)
    for s in sources:
        s.keep_owner = keep_owner
    target = secure_join(dst, dest)
    kind = "dir" if target.is_dir() else ("file" if os.path.lexists(target) else None)
    plan = copier.plan_copy(sources, dest, kind, chmod=chmod)
    owner = copier.resolve_chown(dst, chown) if chown else None
    _mkdir_all(dst, plan.mkdir or plan.dest_dir, owner, _dir_mode(chmod))
    if copier.direct(plan):  # snapshot to snapshot: no tar round trip
        with Copier(secure_join(dst, plan.dest_dir), owner, socket_files=True) as c:
            copier.plan_items(plan, c.add)
            c.close()
        return
    with tempfile.TemporaryFile() as spool:
        copier.write_tar(plan, spool)
        spool.seek(0)
        apply_tar(spool, secure_join(dst, plan.dest_dir), whiteout_format="native", chown=owner, strict=True)


def copy_between_layer_to_fd(out_fd: int, in_fd: int, src_root: str, src_driver: str, src_key: str, dst_root: str,
                             dst_driver: str, dst_key: str, patterns: list[str], dest: str, chmod: int | None,
                             chown: str | None, now: int, epoch: int | None) -> str:
    """COPY --from's layer: what ``copy_between`` (owners kept) and the commit would make in the
    clean snapshot ``dst_key``, written as an uncompressed tar into ``out_fd`` straight from the
    source snapshot (snapshotter.copylayer: each file read once, none created), the destination
    left as it was. ``in_fd`` is not read (Runtime.stream_through's shape). Returns "" when the
    whole tar was written, else why it could not be (the tar is then unfinished: the caller
    discards it and copies). Errors as copy_between's."""
    src = _driver(src_root, src_driver).mount(src_key)
    dst = _driver(dst_root, dst_driver).mount(dst_key)
    sources = _confined_sources(src, patterns)
    target = secure_join(dst, dest)
    kind = "dir" if target.is_dir() else ("file" if os.path.lexists(target) else None)
    plan = copier.plan_copy(sources, dest, kind, chmod=chmod)
    if not copier.direct(plan) or plan.mkdir != plan.dest_dir:
        return "not a plain directory copy"
    owner = copier.resolve_chown(dst, chown) if chown else None
    levels = prefix_levels(str(dst), plan.dest_dir, _dir_mode(chmod), owner or (os.geteuid(), os.getegid()))
    if isinstance(levels, str):
        return levels
    items = walked_items(plan)
    try:
        with os.fdopen(os.dup(out_fd), "wb", buffering=1 << 20) as out:
            write_layer(items, out, levels, owner=owner, now=now, epoch=epoch, socket_files=True,
                        ignore_if_empty=SANDBOX_PATHS)
    except NotStreamable as exc:
        return str(exc) or "not streamable"
    finally:
        items.close()
    return ""


class _WalkStopped(Exception):
    """The consumer of walked_items went away: the walk ends."""


def walked_items(plan: Any, ahead: int = 4096) -> Generator[Item, None, None]:
    """``copier.plan_items(plan)`` as a generator: the walk runs at most ``ahead`` items ahead in a
    thread (memory flat whatever the tree's size); its error is raised where the consumer reads.
    Closing the generator early stops the walk (and waits for its thread)."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item: Item) -> None:
        while not stop.is_set():
            try:
                q.put(("item", item), timeout=0.1)
                return
            except queue.Full:
                continue
        raise _WalkStopped()

    def walk() -> None:
        try:
            copier.plan_items(plan, put)
            end: tuple[str, Any] = ("end", None)
        except _WalkStopped:
            return
        except BaseException as exc:  # re-raised in the consumer
            end = ("error", exc)
        while not stop.is_set():
            try:
                q.put(end, timeout=0.1)
                return
            except queue.Full:
                continue

    t = threading.Thread(target=walk, name="copy-from-walk", daemon=True)
    t.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        t.join()


def make_cache_dir(path: str, uid: int, gid: int, mode: int) -> None:
    """The directory a ``RUN --mount=type=cache,uid=,gid=,mode=`` binds, made once (when the cache
    is new) with those ids and mode, in the namespace so the ids are the container's
    (dockerfile2llb/convert_runmount.go:48-62 setCacheUIDGID: Mkdir("/cache", mode 0755 unless
    given, WithUIDGID(uid 0, gid 0 unless given)), used only for a new cache)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    if owners.recording():  # no chown here (the ptrace isolation): the owner is recorded
        owners.record(path, uid, gid)
    else:
        os.lchown(path, uid, gid)
    os.chmod(path, mode & 0o7777)
