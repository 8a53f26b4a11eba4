"""The library's handle on one store: where it lives, which snapshot driver,
isolation and OCI runtime work there uses, and the Runtime composed from them.

Every library operation (bud, from/run/copy/config/commit, pull, push) takes a
``Workspace`` as its first argument instead of CLI state; the CLI builds one
from ``--root``/``--storage-driver``/``--isolation``/``--runtime`` and nothing
travels through environment variables. A Workspace is cheap to make; the
Store and the Runtime (which probes the host) are created on first use.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import UsageError
from builder.image.storageconf import storage_conf
from builder.image.store import Store, default_root
from builder.workspace.runtime import Runtime

if TYPE_CHECKING:
    from builder.image.store import Store
    from builder.workspace.runtime import Runtime

#: snapshot driver names; ``vfs`` is accepted as buildah's name for the copy-based driver
DRIVERS = ("overlay", "fuse-overlayfs", "native")
#: isolation names (buildah's ``--isolation``; ``rootless`` is bale's user-namespace sandbox, ``ptrace``
#: proot under Landlock for restricted pods: builder/sandbox/ptrace.py)
ISOLATIONS = ("rootless", "chroot", "oci", "ptrace")


class Workspace:
    """One store and how work runs over it.

    ``root``: the store directory (default ``$BALE_ROOT``, else ``/var/lib/bale``
    for root, else ``$XDG_DATA_HOME/bale``). ``driver``: snapshot driver
    (``overlay``, ``fuse-overlayfs``, ``native``; None = probed). ``isolation``:
    ``rootless``, ``chroot`` or ``oci`` (None = probed). ``oci_runtime``: runc,
    crun or a path, used by ``isolation="oci"`` (None = runc, then crun).

    Raises ``builder.errors.UsageError`` for an unknown driver or isolation.
    Thread-safe: the stages of one build share a Workspace.
    """

    def __init__(self, root: str | Path | None = None, *, driver: str | None = None,
                 isolation: str | None = None, oci_runtime: str | None = None) -> None:
        if driver is None:
            driver = storage_conf().driver  # storage.conf / $STORAGE_DRIVER, else probed
        if driver == "vfs":
            driver = "native"
        if driver is not None and driver not in DRIVERS:
            raise UsageError(f"invalid storage driver {driver!r}: expected one of {', '.join(DRIVERS)}")
        if isolation is not None and isolation not in ISOLATIONS:
            raise UsageError(f"invalid isolation {isolation!r}: expected one of {', '.join(ISOLATIONS)}")
        if root is None:
            root = default_root()
        self.root = Path(root)
        self.driver = driver
        self.isolation = isolation
        self.oci_runtime = oci_runtime
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._runtimes: dict[tuple[str | None, str | None], Runtime] = {}

    def __repr__(self) -> str:
        return (f"Workspace(root={str(self.root)!r}, driver={self.driver!r}, isolation={self.isolation!r}, "
                f"oci_runtime={self.oci_runtime!r})")

    @property
    def store(self) -> "Store":
        """The image store under ``root`` (created on first use)."""
        with self._lock:
            if self._store is None:
                self._store = Store(self.root)
            return self._store

    def with_options(self, *, isolation: str | None = None, oci_runtime: str | None = None) -> "Workspace":
        """The same store (shared Store object) with another isolation or OCI runtime; None keeps this one's."""
        ws = Workspace(self.root, driver=self.driver, isolation=isolation or self.isolation,
                       oci_runtime=oci_runtime or self.oci_runtime)
        ws._store = self._store
        return ws

    def runtime(self, isolation: str | None = None, driver: str | None = None) -> "Runtime":
        """The Runtime for ``isolation``/``driver`` (default: this workspace's), made once and reused.
        A working container passes the isolation and driver it was created with.
        Raises UsageError when the host cannot provide the isolation asked for."""
        key = (isolation or self.isolation, driver or self.driver)
        with self._lock:
            rt = self._runtimes.get(key)
            if rt is None:
                rt = Runtime(self.root, isolation=key[0], driver=key[1], oci_runtime=self.oci_runtime)
                self._runtimes[key] = rt
            return rt
