"""What this machine allows, found by trial (unshare may fail with EPERM,
ENOSYS or ENOSPC depending on what forbids it, and mounts can fail after
unshare succeeded), and the isolation and storage driver chosen from it."""
from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from builder.errors import UsageError

PROBE_VERSION = 3


@dataclass
class Capabilities:
    is_root: bool
    userns: bool
    userns_error: str | None
    full_mapping: bool
    mounts: bool
    mounts_error: str | None
    overlay: bool
    overlay_error: str | None
    fuse_overlayfs: bool
    #: a pid namespace's own /proc can be mounted (refused inside most containers: /proc is rbound then)
    fresh_proc: bool = False


def _try_fresh_proc() -> bool:
    """In a namespace child (own mount ns): fork into a new pid ns and mount a proc there."""
    import tempfile
    from snapshotter import syscalls as sc
    try:
        sc.unshare(sc.CLONE_NEWPID)
    except OSError:
        return False
    d = tempfile.mkdtemp(prefix="bale-probe-proc-")
    try:
        pid = os.fork()
        if pid == 0:
            try:
                sc.mount("proc", d, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
                sc.umount(d, sc.MNT_DETACH)
                os._exit(0)
            except BaseException:  # noqa: BLE001 - the exit status is the answer
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) == 0
    finally:
        os.rmdir(d)


def _try_mounts(root: str) -> tuple[bool, str | None, bool, str | None, bool]:
    """In a namespace child: can we mount a tmpfs, and an overlay on the store's filesystem?"""
    import tempfile
    from snapshotter import syscalls as sc
    from snapshotter.drivers import probe_overlay
    d = tempfile.mkdtemp(prefix="bale-probe-")
    try:
        sc.mount("tmpfs", d, "tmpfs", 0, "size=64k")
        sc.umount(d, sc.MNT_DETACH)
        mounts, merr = True, None
    except OSError as exc:
        mounts, merr = False, f"mount: {exc.strerror}"
    finally:
        os.rmdir(d)
    if not mounts:
        return False, merr, False, merr, False
    err = probe_overlay(Path(root) / "snapshots" / ".probe")
    return True, None, err is None, err, _try_fresh_proc()


def _require_writable(store_root: Path) -> None:
    """A store bale cannot write makes every probe fail: say so instead of blaming isolation."""
    if os.access(store_root, os.W_OK):
        return
    from builder.errors import StoreError
    why = "permission denied"
    try:
        if os.statvfs(store_root).f_flag & os.ST_RDONLY:
            why = "read-only file system"
    except OSError:
        pass
    raise StoreError(f"store {store_root} is not writable ({why}): bale needs to write there (use --root)")


def probe(store_root: Path, use_cache: bool = True) -> Capabilities:
    """Probe once per store root (cached in STORE/probe.json, keyed on kernel and uid)."""
    from builder.sandbox.userns import UserNamespace
    cache = Path(store_root) / "probe.json"
    key = {"v": PROBE_VERSION, "kernel": platform.release(), "uid": os.geteuid()}
    if use_cache:
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return Capabilities(**data["caps"])
        except (OSError, ValueError, TypeError):
            pass
    Path(store_root).mkdir(parents=True, exist_ok=True)
    _require_writable(Path(store_root))
    is_root = os.geteuid() == 0
    userns, uerr, full = True, None, True
    mounts = overlay = False
    merr = oerr = None
    fresh_proc = False
    try:
        ns = UserNamespace()
        full = ns.full_mapping
        mounts, merr, overlay, oerr, fresh_proc = ns.call(_try_mounts, str(store_root))
    except Exception as exc:  # noqa: BLE001 - any failure means: not available
        userns, uerr = False, str(exc)
    if is_root:
        userns = False  # root needs no user namespace; mounts tell whether namespaces work at all
    caps = Capabilities(is_root, userns, uerr, full, mounts, merr, overlay, oerr,
                        bool(shutil.which("fuse-overlayfs")) and os.access("/dev/fuse", os.R_OK | os.W_OK),
                        fresh_proc)
    try:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "caps": asdict(caps)}))
        os.replace(tmp, cache)
    except OSError:
        pass
    return caps


def choose(caps: Capabilities, isolation: str | None, driver: str | None) -> tuple[str, str, str | None]:
    """(isolation, driver, notice): rootless+overlay where possible, else chroot+native with a notice."""
    notice = None
    namespaces_ok = caps.mounts and (caps.userns or caps.is_root)
    if isolation is None:
        if namespaces_ok:
            isolation = "rootless"
        else:
            what = "user namespaces" if not (caps.userns or caps.is_root) else "mounts"
            why = (caps.userns_error if what == "user namespaces" else caps.mounts_error) or "refused"
            notice = f"{what} unavailable ({why}): using chroot isolation with the native driver"
            isolation = "chroot"
    if isolation in ("rootless", "oci") and not namespaces_ok:
        raise UsageError(f"--isolation {isolation}: not available here "
                         f"({caps.userns_error or caps.mounts_error})")
    if isolation == "chroot" and not caps.is_root:
        raise UsageError("--isolation chroot needs root (as in a container whose root cannot create namespaces)")
    if driver is None:
        if isolation == "chroot":
            driver = "native"
        elif caps.overlay:
            driver = "overlay"
        elif caps.fuse_overlayfs:
            driver = "fuse-overlayfs"
        else:
            driver = "native"
    if isolation == "chroot" and driver != "native":
        raise UsageError(f"--storage-driver {driver} needs mounts; chroot isolation uses the native driver")
    return isolation, driver, notice
