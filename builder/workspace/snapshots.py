"""Snapshot work as it runs inside the sandbox's namespace.

Every function here is module-level and takes plain data, so ``Runtime.call``
can pickle it into the user-namespace child: there the process is root over
the subordinate id range, so layers owned by many users unpack, diff and
clean up with their owners intact.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

#: mountpoints the sandbox may create; dropped from a diff when still empty
SANDBOX_PATHS = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run",
                 "/dev/shm", "/dev/pts")


def _driver(root: str, name: str) -> Any:
    from snapshotter.api import get_driver
    return get_driver(name, Path(root))


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


def _leased(root: str, kind: str, values: list[str], check: Callable[[], Any] | None = None) -> Any:
    """Record ``values`` in this process's lease on the store that holds the snapshots ``root``,
    under the store's shared lock, then run ``check`` (an existence test) under that lock too:
    a collector either sees the record or runs before the check (builder.image.lease)."""
    from builder.image.lease import lease_for
    from builder.image.storelock import lock_for
    store_root = Path(root).parent
    with lock_for(store_root / "lock")(exclusive=False):
        lease_for(store_root).record(kind, *values)
        return check() if check else None


def ensure_layers(root: str, driver: str, layers: list[tuple[str, Callable[[], BinaryIO]]]) -> None:
    """Unpack every (layer_id, opener) not unpacked yet (shared by all images)."""
    d = _driver(root, driver)
    missing = _leased(root, "layer", [lid for lid, _ in layers],
                      lambda: {lid for lid, _ in layers if not d.has_layer(lid)})
    for layer_id, opener in layers:
        if layer_id in missing:
            d.ensure_layer(layer_id, opener)


def prepare(root: str, driver: str, key: str, layers: list[tuple[str, Callable[[], BinaryIO]]]) -> None:
    """A writable snapshot over ``layers`` (bottom first); the native driver applies their tars."""
    _leased(root, "snapshot", [f"{driver}/{key}"])
    _leased(root, "layer", [lid for lid, _ in layers])
    _driver(root, driver).prepare(key, [lid for lid, _ in layers], [op for _, op in layers])


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
    from snapshotter.safepath import secure_join
    merged = _driver(root, driver).mount(key)
    p = secure_join(merged, path)
    if p.is_dir():
        return "dir"
    return "file" if os.path.lexists(p) else None


def resolve_owner(root: str, driver: str, key: str, user: str) -> tuple[int, int]:
    """uid, gid for a --chown USER[:GROUP] using the container's own passwd and group files."""
    from builder.sandbox.users import resolve_user
    merged = _driver(root, driver).mount(key)
    uid, gid, _groups, _home = resolve_user(merged, user)
    return uid, gid


def apply_from_fd(fd: int, root: str, driver: str, key: str, dest_dir: str, owner: tuple[int, int] | None,
                  user: str | None) -> list[str]:
    """Extract the tar read from ``fd`` under ``dest_dir`` of the mounted container (made if absent).
    The owner comes from ``owner``, or from ``user`` resolved in the container; returns warnings."""
    from snapshotter.apply import apply_tar
    from snapshotter.safepath import secure_join
    merged = _driver(root, driver).mount(key)
    if owner is None and user:
        from builder.sandbox.users import resolve_user
        uid, gid, _g, _h = resolve_user(merged, user)
        owner = (uid, gid)
    target = secure_join(merged, dest_dir)
    _mkdirs(merged, dest_dir)
    with os.fdopen(os.dup(fd), "rb", buffering=1 << 20) as src:
        result = apply_tar(src, target, whiteout_format="native", chown=owner)
    return list(getattr(result, "warnings", []) or [])


def _mkdirs(merged: Path, path: str) -> None:
    """mkdir -p of a container path, each component confined to the rootfs (new dirs 0755 root)."""
    from snapshotter.safepath import secure_join
    cur = "/"
    for part in [p for p in path.split("/") if p]:
        cur = cur.rstrip("/") + "/" + part
        p = secure_join(merged, cur)
        if not p.is_dir():
            if os.path.lexists(p):
                from builder.errors import ContainerError
                raise ContainerError(f"cannot create directory {cur}: a file is in the way")
            os.mkdir(p, 0o755)


def make_dirs(root: str, driver: str, key: str, path: str, owner: tuple[int, int] | None = None) -> bool:
    """mkdir -p inside the container; True if anything was created (WORKDIR needs this)."""
    from snapshotter.safepath import secure_join
    merged = _driver(root, driver).mount(key)
    existed = secure_join(merged, path).is_dir()
    if not existed:
        _mkdirs(merged, path)
        if owner:
            os.lchown(secure_join(merged, path), *owner)
    return not existed


def apply_layer(root: str, driver: str, key: str, opener: Callable[[], BinaryIO]) -> None:
    """Apply a layer tar over the mounted snapshot (deletions performed, as a rootfs sees them)."""
    from snapshotter.apply import apply_tar
    merged = _driver(root, driver).mount(key)
    with opener() as src:
        apply_tar(src, merged, whiteout_format="native")


def _confined_sources(root: Path, patterns: list[str]) -> list[Any]:
    """COPY --from sources inside another rootfs, wildcards and symlinks resolved within it."""
    import fnmatch
    import posixpath
    from builder.build.copier import Source
    from builder.errors import BuildError
    from snapshotter.safepath import secure_join
    out = []
    for pat in patterns:
        clean = posixpath.normpath("/" + pat)
        parent, base = posixpath.split(clean)
        if any(c in base for c in "*?["):
            pdir = secure_join(root, parent)
            names = sorted(n for n in (os.listdir(pdir) if pdir.is_dir() else []) if fnmatch.fnmatch(n, base))
            hits = [(posixpath.join(parent, n), secure_join(root, posixpath.join(parent, n))) for n in names]
        else:
            host = secure_join(root, clean)
            hits = [(clean, host)] if os.path.lexists(host) else []
        if not hits:
            raise BuildError(f"copy source {pat}: no such file or directory in the source stage or image")
        for cpath, host in hits:
            out.append(Source(host, cpath.lstrip("/") or ".", host.is_dir()))
    return out


def copy_between(src_root: str, src_driver: str, src_key: str, dst_root: str, dst_driver: str, dst_key: str,
                 patterns: list[str], dest: str, chmod: int | None, chown: str | None) -> None:
    """COPY --from: sources from one mounted snapshot into another, in the namespace."""
    import tempfile
    from builder.build import copier
    from snapshotter.apply import apply_tar
    from snapshotter.safepath import secure_join
    src = _driver(src_root, src_driver).mount(src_key)
    dst = _driver(dst_root, dst_driver).mount(dst_key)
    sources = _confined_sources(src, patterns)
    target = secure_join(dst, dest)
    kind = "dir" if target.is_dir() else ("file" if os.path.lexists(target) else None)
    plan = copier.plan_copy(sources, dest, kind, chmod=chmod)
    owner = None
    if chown:
        from builder.sandbox.users import resolve_user
        uid, gid, _g, _h = resolve_user(dst, chown)
        owner = (uid, gid)
    _mkdirs(dst, plan.dest_dir)
    with tempfile.TemporaryFile() as spool:
        copier.write_tar(plan, spool)
        spool.seek(0)
        apply_tar(spool, secure_join(dst, plan.dest_dir), whiteout_format="native", chown=owner)
