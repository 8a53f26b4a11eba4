"""What this machine allows, found by trial (unshare may fail with EPERM,
ENOSYS or ENOSPC depending on what forbids it, and mounts can fail after
unshare succeeded), and the isolation and storage driver chosen from it."""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from builder.errors import StoreError, UsageError
from builder.lazyimport import lazy
from builder.sandbox import probecache
from snapshotter import syscalls as sc
from snapshotter.drivers import probe_overlay

if TYPE_CHECKING:
    from builder.sandbox import ptrace
    from builder.sandbox import userns as namespaces
else:  # only a probe (no answer kept for the store or the host) enters the user namespace or asks
    # about ptrace: the namespace helper and the ptrace isolation load then (start-up, issue 10)
    ptrace = lazy("builder.sandbox.ptrace")
    namespaces = lazy("builder.sandbox.userns")

PROBE_VERSION = 6  # 6: the overlay probe mounts under a long store root (fsconfig paths via fds)


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
    #: a pid namespace's own /proc can be mounted (refused inside most containers, whose /proc has
    #: locked over-mounts: RUN gets a minimal read-only /proc then, never the outer one)
    fresh_proc: bool = False
    #: root whose plain mount namespace is refused, but who may make a user namespace: RUN runs in
    #: one mapping ids 0..65535 onto themselves (root_error: why the plain one was refused)
    root_userns: bool = False
    root_error: str | None = None
    #: sethostname in a new uts namespace (refused by some seccomp profiles: the outer name stays)
    hostname_error: str | None = None
    #: newuidmap/newgidmap refused (no_new_privs...): the single-id mapping is used
    mapping_error: str | None = None
    #: the ptrace isolation works (proot, Landlock ABI >= 6, seccomp user notification; non-root
    #: only), else why not
    ptrace: bool = False
    ptrace_error: str | None = None


def _try_fresh_proc() -> bool:
    """In a namespace child (own mount ns): fork into a new pid ns and mount a proc there."""
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


def _try_hostname() -> str | None:
    """In a namespace child: None when sethostname works in a new uts namespace, else why not."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            from snapshotter import syscalls as sc
            sc.unshare(sc.CLONE_NEWUTS)
            sc.sethostname("bale-probe")
            os._exit(0)
        except OSError as exc:
            os.write(w, (os.strerror(exc.errno) if exc.errno else str(exc)).encode()[:200])
            os._exit(1)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    os.close(w)
    msg = os.read(r, 256).decode(errors="replace")
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return None if os.waitstatus_to_exitcode(status) == 0 else (msg or "refused")


def _try_mounts(root: str) -> tuple[bool, str | None, bool, str | None, bool, str | None]:
    """In a namespace child: can we mount a tmpfs, and an overlay on the store's filesystem?"""
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
        return False, merr, False, merr, False, None
    err = probe_overlay(Path(root) / "snapshots" / ".probe")
    hostname = _try_hostname()  # before the pid namespace probe: forks fail once its init exited
    return True, None, err is None, err, _try_fresh_proc(), hostname


def _require_writable(store_root: Path) -> None:
    """A store bale cannot write makes every probe fail: say so instead of blaming isolation."""
    if os.access(store_root, os.W_OK):
        return
    why = "permission denied"
    try:
        if os.statvfs(store_root).f_flag & os.ST_RDONLY:
            why = "read-only file system"
    except OSError:
        pass
    raise StoreError(f"store {store_root} is not writable ({why}): bale needs to write there (use --root)")


def probe(store_root: Path, use_cache: bool = True) -> Capabilities:
    """Probe once per store root (cached in STORE/probe.json, keyed on kernel and uid) and once per
    host, user and confinement (probecache.py: a new store's first command does not probe)."""
    cache = Path(store_root) / "probe.json"
    key = {"v": PROBE_VERSION, "kernel": platform.release(), "uid": os.geteuid()}
    if use_cache:
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return Capabilities(**data["caps"])
        except (OSError, ValueError, TypeError):
            pass
    host_key = probecache.key(Path(store_root), PROBE_VERSION)
    if use_cache:
        known = probecache.load(host_key)
        if known is not None:
            try:
                caps = Capabilities(**known)
            except TypeError:
                pass
            else:
                Path(store_root).mkdir(parents=True, exist_ok=True)
                _require_writable(Path(store_root))
                _save(cache, key, caps)
                return caps
    Path(store_root).mkdir(parents=True, exist_ok=True)
    _require_writable(Path(store_root))
    is_root = os.geteuid() == 0
    userns, uerr, full = True, None, True
    mounts = overlay = False
    merr = oerr = herr = maperr = rerr = None
    fresh_proc = root_userns = False
    try:
        ns = namespaces.UserNamespace()
        mounts, merr, overlay, oerr, fresh_proc, herr = ns.call(_try_mounts, str(store_root))
        full, maperr = ns.full_mapping, ns.map_error
    except Exception as exc:  # noqa: BLE001 - any failure means: not available
        userns, uerr = False, str(exc)
    if is_root:
        userns = False  # root needs no user namespace when it may make mount namespaces itself
        if not mounts:  # a container's root: try a user namespace before falling back to chroot
            rerr = merr or uerr
            try:
                from builder.sandbox.idmap import identity_idmap
                got = namespaces.UserNamespace(identity_idmap()).call(_try_mounts, str(store_root))
                if got[0]:
                    mounts, merr, overlay, oerr, fresh_proc, herr = got
                    userns = root_userns = True
                    uerr = None
            except Exception as exc:  # noqa: BLE001
                uerr = str(exc)
    perr = "bale runs as root (chroot isolation is used where namespaces are refused)" if is_root else \
        ptrace.unavailable()
    caps = Capabilities(is_root, userns, uerr, full, mounts, merr, overlay, oerr,
                        bool(shutil.which("fuse-overlayfs")) and os.access("/dev/fuse", os.R_OK | os.W_OK),
                        fresh_proc, root_userns, rerr, herr, maperr, perr is None, perr)
    _save(cache, key, caps)
    probecache.save(host_key, asdict(caps))
    return caps


def _save(cache: Path, key: dict[str, object], caps: Capabilities) -> None:
    try:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "caps": asdict(caps)}))
        os.replace(tmp, cache)
    except OSError:
        pass


def refusals(caps: Capabilities) -> list[str]:
    """What the probe found refused, each as 'what (call: why) -> what is used instead'."""
    out = []
    if caps.root_error:
        out.append(f"mount namespace as root (unshare(CLONE_NEWNS)/mount: {caps.root_error})"
                   + (" -> a user namespace mapping 0..65535 onto itself" if caps.root_userns else ""))
    if caps.userns_error:
        instead = "chroot isolation" if caps.is_root else ("ptrace isolation" if caps.ptrace else "no RUN")
        out.append(f"user namespace (unshare(CLONE_NEWUSER): {caps.userns_error}) -> {instead}")
    if caps.userns_error and not caps.is_root and not caps.ptrace:
        out.append(f"ptrace isolation ({caps.ptrace_error})")
    if caps.mapping_error:
        out.append(f"id mapping ({caps.mapping_error}) -> single-id mapping")
    if caps.mounts_error and not caps.mounts:
        out.append(f"mounts (mount: {caps.mounts_error}) -> chroot isolation, native driver")
    if caps.overlay_error and caps.mounts:
        out.append(f"overlay (fsmount: {caps.overlay_error}) -> "
                   + ("fuse-overlayfs" if caps.fuse_overlayfs else "native driver"))
    if caps.mounts and not caps.fresh_proc:
        out.append("fresh /proc (mount(proc): refused, the outer /proc has over-mounts) -> "
                   "a minimal read-only /proc without processes")
    if caps.hostname_error:
        out.append(f"hostname (sethostname: {caps.hostname_error}) -> the outer hostname is kept")
    return out


def choose(caps: Capabilities, isolation: str | None, driver: str | None) -> tuple[str, str, str | None]:
    """(isolation, driver, notice): rootless+overlay where possible, else chroot+native with a notice
    (root), else ptrace+native (non-root: a restricted pod). UsageError when nothing can run a RUN
    safely here or the isolation asked for is not available."""
    notice = None
    namespaces_ok = caps.mounts and (caps.userns or caps.is_root)
    if isolation == "ptrace" and not caps.ptrace:
        raise UsageError(f"--isolation ptrace: not available here ({caps.ptrace_error})")
    if not namespaces_ok and not caps.is_root and isolation in (None, "chroot", "ptrace"):
        # a restricted pod (non-root, no user namespaces, no chroot): proot under Landlock, owners
        # recorded by bale (sandbox/ptrace.py); where that does not work either, refuse before
        # anything starts, in one line
        if not caps.ptrace:
            raise UsageError(f"cannot build here as uid {os.getuid()}: user namespaces are refused "
                             f"({caps.userns_error or caps.mounts_error}), chroot isolation needs root, and "
                             f"ptrace isolation is not available ({caps.ptrace_error}); run bale as root in this "
                             "container, or allow user namespaces (a seccomp profile permitting unshare, or "
                             "Unconfined)")
        if isolation == "chroot":
            notice = (f"--isolation chroot needs root; as uid {os.getuid()} the strongest isolation that works "
                      "here is used: ptrace (proot under Landlock)")
        elif isolation is None:
            notice = (f"user namespaces unavailable ({caps.userns_error or caps.mounts_error}): using ptrace "
                      "isolation (proot under Landlock) with the native driver")
        isolation = "ptrace"
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
    if isolation == "chroot" and not caps.is_root:  # BUILDAH_ISOLATION=chroot in CI images, as any user
        if not namespaces_ok:
            raise UsageError(f"--isolation chroot needs root, and as uid {os.getuid()} user namespaces are "
                             f"refused here ({caps.userns_error or caps.mounts_error}): RUN cannot be isolated")
        isolation = "rootless"
        notice = (f"--isolation chroot needs root; as uid {os.getuid()} the strongest isolation that works here "
                  "is used: rootless (user namespace)")
    if driver is None:
        if isolation in ("chroot", "ptrace"):
            driver = "native"
        elif caps.overlay:
            driver = "overlay"
        elif caps.fuse_overlayfs:
            driver = "fuse-overlayfs"
        else:
            driver = "native"
    if isolation in ("chroot", "ptrace") and driver != "native":
        raise UsageError(f"--storage-driver {driver} needs mounts; {isolation} isolation uses the native driver")
    return isolation, driver, notice
