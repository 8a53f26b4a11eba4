"""containers-storage.conf(5): the ``driver``, ``graphroot`` and ``runroot`` bale takes as
defaults when neither ``--root``/``$BALE_ROOT`` nor ``--storage-driver`` say otherwise.

Files, as containers/storage finds them: ``$CONTAINERS_STORAGE_CONF``; else, for root,
/etc/containers/storage.conf; for other users ~/.config/containers/storage.conf
($XDG_CONFIG_HOME), else the system file for its driver only (a rootless user's graph root
is never the system one; ``rootless_storage_path`` in the system file is). The
distribution default /usr/share/containers/storage.conf describes podman's own store and is
not read.

bale keeps its own store format, so a graph root ``G`` becomes bale's store ``G/bale``
(next to containers/storage's driver directories, never inside them). Drivers map to bale's:
``overlay`` → overlay (``fuse-overlayfs`` when ``mount_program`` names it), ``vfs`` → native;
others are ignored (bale probes). ``$STORAGE_DRIVER`` overrides the file's driver, as in
containers/storage.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import UsageError
from builder.log import log

SYSTEM_FILE = Path("/etc/containers/storage.conf")


@dataclass(frozen=True)
class StorageConf:
    #: bale driver name ("overlay", "fuse-overlayfs", "native") or None
    driver: str | None = None
    #: containers/storage graph root (bale's store is GRAPHROOT/bale)
    graphroot: str | None = None
    runroot: str | None = None
    #: the file these came from
    source: str | None = None

    @property
    def bale_root(self) -> Path | None:
        return Path(self.graphroot) / "bale" if self.graphroot else None


def _user_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.environ.get("HOME") or os.path.expanduser("~"),
                                                             ".config")
    return Path(base) / "containers" / "storage.conf"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read storage.conf: {exc}") from None
    import tomllib  # only when there is a file to parse (start-up: issue 10)
    try:
        with fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: cannot read storage.conf: {exc}") from None
    storage = data.get("storage")
    return storage if isinstance(storage, dict) else {}


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def map_driver(name: str, storage: dict[str, Any], where: str) -> str | None:
    """containers/storage driver name → bale's, or None (with a log line) when bale has none."""
    if name == "vfs":
        return "native"
    if name == "overlay":
        opts: dict[str, Any] = _table(storage.get("options"))
        overlay = _table(opts.get("overlay"))
        program = str(overlay.get("mount_program") or opts.get("mount_program") or "")
        return "fuse-overlayfs" if program.endswith("fuse-overlayfs") else "overlay"
    if name:
        log.info("%s: storage driver %r has no bale equivalent; probing instead", where, name)
    return None


@functools.lru_cache(maxsize=4)
def _load(env_file: str | None, user_file: str, rootless: bool, env_driver: str | None) -> StorageConf:
    driver = graphroot = runroot = source = None
    storage: dict[str, Any] | None = None
    if env_file:
        storage, source = _read(Path(env_file)), env_file
        if storage is None:
            raise UsageError(f"CONTAINERS_STORAGE_CONF={env_file}: no such file")
    elif rootless:
        storage = _read(Path(user_file))
        source = user_file if storage is not None else None
        if storage is None:
            system = _read(SYSTEM_FILE)
            if system is not None:
                source = str(SYSTEM_FILE)
                storage = {"driver": system.get("driver"), "options": system.get("options")}
                opts = _table(system.get("options"))
                if opts.get("rootless_storage_path"):
                    storage["graphroot"] = str(opts["rootless_storage_path"]).replace(
                        "$UID", str(os.getuid())).replace("$HOME", os.path.expanduser("~")).replace(
                        "$USER", os.environ.get("USER", ""))
    else:
        storage = _read(SYSTEM_FILE)
        source = str(SYSTEM_FILE) if storage is not None else None
    if storage is not None:
        driver = map_driver(str(storage.get("driver") or ""), storage, source or "storage.conf")
        graphroot = str(storage["graphroot"]) if storage.get("graphroot") else None
        runroot = str(storage["runroot"]) if storage.get("runroot") else None
    if env_driver:
        driver = map_driver(env_driver, storage or {}, "STORAGE_DRIVER")
    return StorageConf(driver, graphroot, runroot, source)


def storage_conf() -> StorageConf:
    """The storage.conf defaults for this user (cached per environment)."""
    return _load(os.environ.get("CONTAINERS_STORAGE_CONF") or None, str(_user_file()), os.geteuid() != 0,
                 os.environ.get("STORAGE_DRIVER") or None)
