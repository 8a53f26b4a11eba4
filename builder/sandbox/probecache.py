"""The probe's answer kept outside any store, so the first command on a new store does not probe
(each probe enters a user namespace and tries mounts: tens of milliseconds).

Where: ``$XDG_RUNTIME_DIR/bale/`` when that directory is the user's own and private, else
``$XDG_CACHE_HOME/bale/`` (default ``$HOME/.cache/bale/``), made 0700; a directory or file that is
not this user's, is a symlink or is open to others is never read, and without such a directory
nothing is cached. One file per key (at most ``KEEP``, the oldest removed)::

    probe-<first 16 hex of sha256(KEY as JSON)>.json    {"key": KEY, "caps": {...Capabilities...}}

Nothing is cached under a seccomp filter (a container's, a pod's profile): what it refuses
cannot be told from outside it, so the probe runs there. Elsewhere KEY holds everything the
answer depends on that can change under the same user: the probe's version, bale's version, the
kernel and its boot id, the uid and gid, the store's filesystem (device of its nearest existing
directory), this process's mount, user and pid namespaces (a container's masked /proc, a
user-namespaced pod), its no_new_privs and capability sets, the user-namespace limit, the
id-mapping tools, fuse-overlayfs and proot found on PATH, and the subordinate-id files' sizes
and times. A hit is used only if its stored key equals the key computed now.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from builder import __version__

#: answers kept (one per key: stores on other filesystems, containers, confinements...)
KEEP = 16


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _status() -> list[str]:
    """This process's confinement as /proc/self/status says it: Seccomp, NoNewPrivs, CapEff, CapBnd."""
    keep = ("Seccomp:", "NoNewPrivs:", "CapEff:", "CapBnd:")
    return [line.replace("\t", " ") for line in _read("/proc/self/status").splitlines() if line.startswith(keep)]


def _namespaces() -> list[str]:
    out = []
    for ns in ("mnt", "user", "pid"):
        try:
            out.append(os.readlink(f"/proc/self/ns/{ns}"))
        except OSError:
            out.append("")
    return out


def _device(store_root: Path) -> int:
    for p in (store_root, *store_root.parents):
        try:
            return os.stat(p).st_dev
        except OSError:
            continue
    return -1


def _stamp(path: str) -> list[int]:
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns, st.st_ino]
    except OSError:
        return []


def key(store_root: Path, probe_version: int) -> dict[str, Any] | None:
    """The cache key for probing ``store_root`` here and now (see the module doc); None under a
    seccomp filter, whose rules (what the probe found refused) no key can name: probe then."""
    status = _status()
    if any(line.startswith("Seccomp:") and line.split()[-1] != "0" for line in status):
        return None
    return {"v": probe_version, "bale": __version__, "kernel": platform.release(),
            "boot": _read("/proc/sys/kernel/random/boot_id"), "uid": os.geteuid(), "gid": os.getegid(),
            "dev": _device(Path(store_root).absolute()), "status": status, "ns": _namespaces(),
            "userns_max": _read("/proc/sys/user/max_user_namespaces"),
            "tools": [shutil.which(t) or "" for t in ("newuidmap", "newgidmap", "fuse-overlayfs", "proot")],
            "subids": [_stamp("/etc/subuid"), _stamp("/etc/subgid")]}


def _private_dir(path: Path, create: bool) -> bool:
    """Whether ``path`` is a directory of this user's, not a symlink, closed to group and others
    (made so when ``create`` and absent)."""
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def cache_dir(create: bool = False) -> Path | None:
    """The directory for cached probe answers (see the module doc); None when there is no safe one."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and _private_dir(Path(runtime), False):
        d = Path(runtime) / "bale"
    else:
        cache = os.environ.get("XDG_CACHE_HOME", "")
        if not cache or not os.path.isabs(cache):
            home = os.environ.get("HOME", "")
            if not home or not os.path.isabs(home):
                return None
            cache = os.path.join(home, ".cache")
        if create:
            try:
                os.makedirs(cache, 0o700, exist_ok=True)
            except OSError:
                return None
        try:
            if os.stat(cache).st_uid != os.geteuid():
                return None
        except OSError:
            return None
        d = Path(cache) / "bale"
    return d if _private_dir(d, create) else None


def _file(k: dict[str, Any], create: bool) -> Path | None:
    d = cache_dir(create)
    if d is None:
        return None
    digest = hashlib.sha256(json.dumps(k, sort_keys=True).encode()).hexdigest()[:16]
    return d / f"probe-{digest}.json"


def load(k: dict[str, Any] | None) -> dict[str, Any] | None:
    """The capabilities cached for key ``k`` (Capabilities' fields), or None: no file, a file not
    this user's own or writable by others, or a stored key that differs."""
    if k is None:
        return None
    path = _file(k, False)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_size > 1 << 16:
            return None
        data = json.loads(os.read(fd, 1 << 16))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or data.get("key") != k or not isinstance(data.get("caps"), dict):
        return None
    caps: dict[str, Any] = data["caps"]
    return caps


def save(k: dict[str, Any] | None, caps: dict[str, Any]) -> None:
    """Keep ``caps`` for key ``k``; silently nothing without a key or a safe directory."""
    if k is None:
        return
    path = _file(k, True)
    if path is None:
        return
    try:
        old = sorted(path.parent.glob("probe-*.json"), key=lambda p: p.stat().st_mtime)
        for stale in old[:max(0, len(old) - KEEP + 1)]:
            stale.unlink()
    except OSError:
        pass
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".probe-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps({"key": k, "caps": caps}))
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass
