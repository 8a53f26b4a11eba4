"""Snapshot drivers over one storage directory:

    ROOT/layers/<id>/diff                 unpacked layers in overlay format (shared)
    ROOT/containers/<key>/layers.json     the layer ids under a snapshot, bottom first
    ROOT/containers/<key>/{upper,work,merged}        overlay and fuse-overlayfs
    ROOT/containers/<key>/{rootfs,index.json}         native

Lifecycle: ensure_layer (once per layer) → prepare(key, layers) → mount(key)
(in the caller's mount namespace) → the step runs → diff(key) writes the
changes as a tar → commit(key, layer_id) makes them a layer under the same
snapshot → ... → remove(key).
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Collection

from snapshotter import owners, syscalls
from snapshotter.errors import SnapshotError
from snapshotter.safepath import short_path, walk

if TYPE_CHECKING:
    from snapshotter.diff import Change
# The tar reader and writer (snapshotter.apply, snapshotter.diff) and subprocess are imported by
# the methods that use them, not here: an empty snapshot (`bale from scratch`) needs none of them
# (start-up, issue 10). builder/workspace/snapshots.py imports them before any namespace worker forks.

MAX_LOWERS = 500
Opener = Callable[[], BinaryIO]


def in_initial_userns() -> bool:
    try:
        return Path("/proc/self/uid_map").read_text().split() == ["0", "0", "4294967295"]
    except OSError:
        return True


def remove_tree(path: Path) -> None:
    if os.path.lexists(path):
        from snapshotter.apply import _remove
        _remove(path)


#: name prefixes of work directories next to layers and snapshots: ``.new-`` just made (not yet
#: locked), ``.tmp-`` being built and ``.del-`` being removed, both held by an flock on the directory
#: while their writer lives, so ``sweep`` removes only what a dead process left.
NEW, TMP, DEL = ".new-", ".tmp-", ".del-"
NEW_GRACE_S = 60.0


def _locked_tempdir(parent: Path, tag: str) -> tuple[Path, int]:
    """A fresh ``parent/.tmp-TAG-XXXX`` and the fd holding its exclusive flock (the caller closes it)."""
    new = Path(tempfile.mkdtemp(dir=parent, prefix=f"{NEW}{tag}-"))
    fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        tmp = new.with_name(TMP + new.name[len(NEW):])
        os.rename(new, tmp)
    except BaseException:
        os.close(fd)
        remove_tree(new)
        raise
    return tmp, fd


def _discard(path: Path) -> None:
    """Remove a directory tree so that no crash leaves it half-removed under its own name: it is
    renamed to ``.del-`` (under an flock) first, then removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError:  # not a directory: a plain unlink is atomic already
        remove_tree(path)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        gone = path.with_name(f"{DEL}{path.name[-24:]}-{secrets.token_hex(4)}")
        try:
            os.rename(path, gone)
        except FileNotFoundError:
            return
        remove_tree(gone)
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path) -> bool:
    """Rename the finished ``tmp`` to ``final`` (one rename: the only commit point). Returns False,
    discarding ``tmp``, when another writer published ``final`` first. A ``final`` without its
    ``diff`` (left by an older bale that crashed mid-commit) is discarded and replaced."""
    if final.exists() and not (final / "diff").is_dir():
        _discard(final)
    try:
        os.rename(tmp, final)
        return True
    except OSError:
        if not (final / "diff").is_dir():
            raise
        remove_tree(tmp)  # ours, and already under our flock (a second flock would wait on the first)
        return False


def sweep_dir(parent: Path) -> int:
    """Remove the work directories (``.new-``, ``.tmp-``, ``.del-``) that dead writers left under
    ``parent``; those whose writer is alive (flock held, or ``.new-`` younger than a minute) stay.
    Returns how many were removed."""
    removed = 0
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return 0
    for name in names:
        path = parent / name
        if name.startswith(NEW):
            try:
                if time.time() - os.lstat(path).st_mtime > NEW_GRACE_S:
                    remove_tree(path)
                    removed += 1
            except OSError:
                pass
            continue
        if not name.startswith((TMP, DEL)):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its writer is alive
            os.close(fd)
            continue
        try:
            remove_tree(path)
            removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


class _Base:
    name = "base"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "layers").mkdir(parents=True, exist_ok=True)
        (self.root / "containers").mkdir(parents=True, exist_ok=True)

    def _cdir(self, key: str) -> Path:
        if "/" in key or not key or key.startswith("."):
            raise SnapshotError(f"invalid snapshot key {key!r}")
        return self.root / "containers" / key

    def layer_ids(self, key: str) -> list[str]:
        try:
            return list(json.loads((self._cdir(key) / "layers.json").read_text()))
        except FileNotFoundError:
            raise SnapshotError(f"snapshot {key}: not prepared") from None

    def _save_layers(self, key: str, ids: list[str]) -> None:
        if len(ids) > MAX_LOWERS:
            raise SnapshotError(f"snapshot {key}: {len(ids)} layers exceed overlayfs' limit of {MAX_LOWERS}")
        p = self._cdir(key) / "layers.json"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(ids))
        os.replace(tmp, p)

    def layer_dir(self, layer_id: str) -> Path:
        return self.root / "layers" / layer_id / "diff"

    def has_layer(self, layer_id: str) -> bool:
        return self.layer_dir(layer_id).is_dir()

    def remove_layer(self, layer_id: str) -> None:
        """Remove an unpacked layer; it vanishes under its name in one rename, never half-removed."""
        if "/" in layer_id or layer_id.startswith(".") or not layer_id:
            raise SnapshotError(f"invalid layer id {layer_id!r}")
        _discard(self.root / "layers" / layer_id)

    def layers(self) -> list[str]:
        """Ids of the unpacked layers (work directories excluded)."""
        try:
            return sorted(n for n in os.listdir(self.root / "layers") if not n.startswith("."))
        except FileNotFoundError:
            return []

    def snapshots(self) -> list[str]:
        """Keys of the snapshots (work directories excluded)."""
        try:
            return sorted(n for n in os.listdir(self.root / "containers") if not n.startswith("."))
        except FileNotFoundError:
            return []

    def sweep(self) -> int:
        """Remove what killed writers left (half-built layers, half-removed trees); see ``sweep_dir``."""
        return sweep_dir(self.root / "layers") + sweep_dir(self.root / "containers")

    def remove(self, key: str) -> None:
        d = self._cdir(key)
        merged = d / "merged"
        if os.path.ismount(merged):
            try:
                syscalls.umount(str(merged), syscalls.MNT_DETACH)
            except OSError:
                pass
        _discard(d)


def top_first_unique(layer_ids: list[str]) -> list[str]:
    """Layer ids (given bottom first) top first, each once: overlayfs refuses one lowerdir given
    twice (ELOOP), and a layer repeated higher up already decides everything its lower copy would
    (its files and whiteouts cover the same paths), so the topmost copy is kept. Issue 8 class 10."""
    out: list[str] = []
    for lid in reversed(layer_ids):
        if lid not in out:
            out.append(lid)
    return out


class OverlayDriver(_Base):
    """Kernel overlayfs (``userxattr`` inside a user namespace); layers are lowerdirs."""

    name = "overlay"

    def ensure_layer(self, layer_id: str, open_tar: Opener) -> Path:
        final = self.root / "layers" / layer_id
        if (final / "diff").is_dir():
            return final / "diff"
        tmp, lock = _locked_tempdir(self.root / "layers", layer_id[:12])
        try:
            from snapshotter.apply import apply_tar
            with open_tar() as src:
                apply_tar(src, tmp / "diff", whiteout_format="overlay")
            _publish(tmp, final)  # another process may have unpacked it first: theirs stays
        except BaseException:
            remove_tree(tmp)
            raise
        finally:
            os.close(lock)
        return final / "diff"

    def prepare(self, key: str, layer_ids: list[str], openers: list[Opener] | None = None) -> None:
        d = self._cdir(key)
        for sub in ("upper", "work", "merged", "empty"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for lid in layer_ids:
            if not self.has_layer(lid):
                raise SnapshotError(f"snapshot {key}: layer {lid[:12]} is not unpacked")
        self._save_layers(key, layer_ids)

    def mount(self, key: str, target: Path | None = None) -> Path:
        d = self._cdir(key)
        merged = Path(target) if target else d / "merged"
        if os.path.ismount(merged):
            return merged
        lowers = [str(self.layer_dir(l)) for l in top_first_unique(self.layer_ids(key))] or [str(d / "empty")]
        fds: list[int] = []
        try:
            strings = [("lowerdir+", fsconfig_path(path, fds)) for path in lowers]
            strings += [("upperdir", fsconfig_path(str(d / "upper"), fds)),
                        ("workdir", fsconfig_path(str(d / "work"), fds))]
            if in_initial_userns():
                strings += [("redirect_dir", "off"), ("metacopy", "off"), ("index", "off")]
                flags: list[str] = []
            else:
                flags = ["userxattr"]
            syscalls.fs_mount("overlay", str(merged), strings, flags)
        except OSError as exc:
            raise SnapshotError(f"snapshot {key}: overlay mount failed: {exc.strerror}") from None
        finally:
            for fd in fds:
                os.close(fd)
        return merged

    def unmount(self, key: str) -> None:
        merged = self._cdir(key) / "merged"
        if os.path.ismount(merged):
            syscalls.umount(str(merged), syscalls.MNT_DETACH)

    def _before(self, key: str) -> Callable[[str], tuple[int, int, int] | None]:
        lowers = [self.layer_dir(l) for l in self.layer_ids(key)]

        def before(path: str) -> tuple[int, int, int] | None:
            for low in reversed(lowers):
                p = short_path(low / path.lstrip("/"))
                if os.path.lexists(p):
                    st = os.lstat(p)
                    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                        return None
                    return st.st_mode, st.st_uid, st.st_gid
            return None
        return before

    def changes(self, key: str) -> list[Change]:
        """The upper dir read as changes, in every upper format: 0:0 devices and ``.wh.`` files
        are deletions; ``user.overlay``/``trusted.overlay``/``user.fuseoverlayfs`` opaque xattrs
        and ``.wh..wh..opq`` files mark opaque dirs. A dir absent below needs no opaque marker
        (fuse-overlayfs marks every new dir), so it is plain content, as the kernel's upper has it."""
        from snapshotter.diff import Change
        upper = self._cdir(key) / "upper"
        before = self._before(key)
        out: dict[str, Change] = {}
        for dirpath, dirnames, filenames in walk(upper, strict=True):  # fd-based: trees deeper than PATH_MAX
            rel = os.path.relpath(dirpath, upper)
            base = "" if rel == "." else "/" + rel
            for name in dirnames + filenames:
                host = short_path(os.path.join(dirpath, name))
                st = os.lstat(host)
                cpath = f"{base}/{name}"
                if name in (".wh..wh..opq", ".wh..opq"):  # fuse-overlayfs' opaque markers
                    if base and before(base) is not None:
                        out[base] = Change(base, "opaque")
                elif name.startswith(".wh.") and stat.S_ISREG(st.st_mode):
                    out[f"{base}/{name[4:]}"] = Change(f"{base}/{name[4:]}", "whiteout")
                elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    out[cpath] = Change(cpath, "whiteout")
                elif stat.S_ISDIR(st.st_mode) and _is_opaque(host) and before(cpath) is not None:
                    out[cpath] = Change(cpath, "opaque")
                else:
                    out[cpath] = Change(cpath, "content")
        return list(out.values())

    def diff(self, key: str, out: BinaryIO, *, ignore_if_empty: Collection[str] = (),
             source_date_epoch: int | None = None) -> int:
        from snapshotter.diff import filter_sandbox_paths, write_tar
        upper = self._cdir(key) / "upper"
        changes = filter_sandbox_paths(self.changes(key), upper, ignore_if_empty, self._before(key))
        return write_tar(upper, changes, out, source_date_epoch=source_date_epoch)

    def commit(self, key: str, layer_id: str) -> None:
        """The upper becomes layer ``layer_id`` (already in overlay format) on top of the snapshot."""
        d = self._cdir(key)
        self.unmount(key)
        final = self.root / "layers" / layer_id
        if self.has_layer(layer_id):
            _discard(d / "upper")
        else:  # the layer appears complete or not at all: built aside, published by one rename
            tmp, lock = _locked_tempdir(self.root / "layers", layer_id[:12])
            try:
                os.rename(d / "upper", tmp / "diff")
                _publish(tmp, final)
            except BaseException:
                remove_tree(tmp)
                raise
            finally:
                os.close(lock)
        remove_tree(d / "work")
        (d / "upper").mkdir()
        (d / "work").mkdir()
        self._save_layers(key, self.layer_ids(key) + [layer_id])


def _is_opaque(host: str) -> bool:
    from snapshotter.apply import OPAQUE_XATTRS
    for name in OPAQUE_XATTRS + ("trusted.overlay.opaque",):
        try:
            if os.getxattr(host, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


class FuseOverlayDriver(OverlayDriver):
    """fuse-overlayfs: the same layout, mounted by the helper binary."""

    name = "fuse-overlayfs"

    def mount(self, key: str, target: Path | None = None) -> Path:
        d = self._cdir(key)
        merged = Path(target) if target else d / "merged"
        if os.path.ismount(merged):
            return merged
        lowers = ":".join(str(self.layer_dir(l)) for l in top_first_unique(self.layer_ids(key))) or str(d / "empty")
        opts = f"lowerdir={lowers},upperdir={d / 'upper'},workdir={d / 'work'}"
        import subprocess
        r = subprocess.run(["fuse-overlayfs", "-o", opts, str(merged)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SnapshotError(f"snapshot {key}: fuse-overlayfs failed: {r.stderr.strip().splitlines()[-1:]}")
        return merged

    def unmount(self, key: str) -> None:
        merged = self._cdir(key) / "merged"
        if os.path.ismount(merged):
            import subprocess
            subprocess.run(["fusermount3", "-u", str(merged)], capture_output=True)


class NativeDriver(_Base):
    """A plain directory per container; changes found by comparing with an index taken before
    the step. Needs no mounts at all (chroot isolation inside locked-down pods)."""

    name = "native"

    def has_layer(self, layer_id: str) -> bool:
        return True  # layers are applied straight into each rootfs by prepare

    def ensure_layer(self, layer_id: str, open_tar: Opener) -> Path:
        return self.root / "layers" / layer_id

    def prepare(self, key: str, layer_ids: list[str], openers: list[Opener] | None = None) -> None:
        d = self._cdir(key)
        rootfs = d / "rootfs"
        rootfs.mkdir(parents=True, exist_ok=True)
        if len(openers or []) != len(layer_ids):
            raise SnapshotError(f"snapshot {key}: the native driver needs every layer's tar")
        for opener in openers or []:
            from snapshotter.apply import apply_tar
            with opener() as src:
                apply_tar(src, rootfs, whiteout_format="native")
        self._save_layers(key, layer_ids)
        self._save_index(key)

    def _save_index(self, key: str) -> None:
        d = self._cdir(key)
        p = d / "index.json"
        p.with_suffix(".tmp").write_text(json.dumps(_scan(d / "rootfs")))
        os.replace(p.with_suffix(".tmp"), p)

    def mount(self, key: str, target: Path | None = None) -> Path:
        return self._cdir(key) / "rootfs"

    def unmount(self, key: str) -> None:
        pass

    def changes(self, key: str) -> list[Change]:
        from snapshotter.diff import Change
        d = self._cdir(key)
        before: dict[str, list[Any]] = json.loads((d / "index.json").read_text())
        now = _scan(d / "rootfs")
        out: list[Change] = []
        opaque: list[str] = []
        for path in sorted(now, key=lambda p: p.split("/")):
            old = before.get(path)
            if old is None:
                out.append(Change(path, "content"))
            elif old != now[path]:
                recreated_dir = stat.S_ISDIR(now[path][0]) and stat.S_ISDIR(old[0]) and _replaced(old, now[path])
                out.append(Change(path, "opaque" if recreated_dir else "content"))
                if recreated_dir:
                    opaque.append(path + "/")
        gone = sorted((p for p in before if p not in now), key=lambda p: p.split("/"))
        reported: list[str] = []
        for path in gone:
            if any(path.startswith(g + "/") for g in reported) or any(path.startswith(o) for o in opaque):
                continue
            reported.append(path)
            out.append(Change(path, "whiteout"))
        return out

    def diff(self, key: str, out: BinaryIO, *, ignore_if_empty: Collection[str] = (),
             source_date_epoch: int | None = None) -> int:
        from snapshotter.diff import filter_sandbox_paths, write_tar
        d = self._cdir(key)
        before: dict[str, list[Any]] = json.loads((d / "index.json").read_text())

        def owner_before(p: str) -> tuple[int, int, int] | None:
            return (int(before[p][0]), int(before[p][1]), int(before[p][2])) if p in before else None
        changes = filter_sandbox_paths(self.changes(key), d / "rootfs", ignore_if_empty, owner_before)
        return write_tar(d / "rootfs", changes, out, source_date_epoch=source_date_epoch)

    def commit(self, key: str, layer_id: str) -> None:
        self._save_layers(key, self.layer_ids(key) + [layer_id])
        self._save_index(key)


def _scan(rootfs: Path) -> dict[str, list[Any]]:
    """path -> [mode, uid, gid, size, mtime_ns, ctime_ns, inode, rdev, link target, handle].

    ``handle`` (directories only) is the kernel's file handle, which carries the inode's
    generation: ext4 hands a deleted directory's inode number to the next mkdir, so the
    number alone cannot tell "replaced" from "modified"; the handle can."""
    out: dict[str, list[Any]] = {}
    recording = owners.recording()  # owners are records, not the disk's (ptrace isolation)
    for dirpath, dirnames, filenames in walk(rootfs, strict=True):  # fd-based: trees deeper than PATH_MAX
        rel = os.path.relpath(dirpath, rootfs)
        base = "" if rel == "." else "/" + rel
        for name in dirnames + filenames:
            host = short_path(os.path.join(dirpath, name))
            st = os.lstat(host)
            link = os.readlink(host) if stat.S_ISLNK(st.st_mode) else ""
            handle = syscalls.file_handle(host) if stat.S_ISDIR(st.st_mode) else None
            uid, gid = owners.owner_of(host, st) if recording else (st.st_uid, st.st_gid)
            out[f"{base}/{name}"] = [st.st_mode, uid, gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                     st.st_ino, st.st_rdev, link, handle]
    return out


def _replaced(old: list[Any], now: list[Any]) -> bool:
    """Whether a directory at the same path is another inode than the indexed one: by file handle
    where the filesystem gives one (never reused), else by inode number (may be recycled)."""
    old_handle = old[9] if len(old) > 9 else None
    if old_handle is not None and now[9] is not None:
        return bool(old_handle != now[9])
    return bool(old[6] != now[6])


def get_driver(name: str, root: Path) -> _Base:
    drivers = {"overlay": OverlayDriver, "fuse-overlayfs": FuseOverlayDriver, "native": NativeDriver}
    if name not in drivers:
        raise SnapshotError(f"unknown storage driver {name!r} (overlay, fuse-overlayfs, native)")
    return drivers[name](Path(root) / name)


#: fsconfig string values must stay under 256 bytes (a 257-byte path gives EINVAL, PLATFORM.md 2.4)
FSCONFIG_PATH_MAX = 200


def fsconfig_path(path: str, fds: list[int]) -> str:
    """``path`` as an fsconfig value for overlay's ``lowerdir+``, ``upperdir`` and ``workdir``
    (kernel 6.8+): as it is when shorter than FSCONFIG_PATH_MAX, else ``/proc/self/fd/N`` of an
    O_PATH descriptor of the directory, appended to ``fds`` (the caller closes them once the
    mount is made), so a store of any depth mounts. Raises OSError when it cannot be opened."""
    if len(os.fsencode(path)) < FSCONFIG_PATH_MAX:
        return path
    fds.append(os.open(short_path(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
    return f"/proc/self/fd/{fds[-1]}"


def probe_overlay(root: Path) -> str | None:
    """Try a real overlay mount under ``root`` (call inside the namespace that will mount);
    None when it works, else the error."""
    Path(root).mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(dir=root, prefix=".probe-"))
    try:
        for sub in ("l1", "l2", "u", "w", "m"):
            (d / sub).mkdir()
        flags = [] if in_initial_userns() else ["userxattr"]
        fds: list[int] = []
        try:
            syscalls.fs_mount("overlay", str(d / "m"), [(key, fsconfig_path(str(d / sub), fds)) for key, sub in (
                ("lowerdir+", "l1"), ("lowerdir+", "l2"), ("upperdir", "u"), ("workdir", "w"))], flags)
        finally:
            for fd in fds:
                os.close(fd)
        (d / "m" / "x").write_text("x")
        syscalls.umount(str(d / "m"), syscalls.MNT_DETACH)
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        shutil.rmtree(d, ignore_errors=True)
