"""Making a writable snapshot, and the lease records that keep what it uses from collection:
the part of the snapshot work (builder/workspace/snapshots.py, which re-exports these) that
needs no copy, apply or diff code, so `bale from scratch` imports only this and the drivers
(start-up, issue 10). Runs in this process for an empty snapshot, in a namespace worker
(``Runtime.call``) over layers."""
from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, Callable

from builder.image.lease import lease_for
from builder.image.storelock import lock_for
from snapshotter.drivers import get_driver


def _driver(root: str, name: str) -> Any:
    return get_driver(name, Path(root))


def _leased(root: str, kind: str, values: list[str], check: Callable[[], Any] | None = None) -> Any:
    """Record ``values`` in this process's lease on the store that holds the snapshots ``root``,
    under the store's shared lock, then run ``check`` (an existence test) under that lock too:
    a collector either sees the record or runs before the check (builder.image.lease)."""
    if not values and check is None:
        return None  # nothing to record or check: no lock taken
    store_root = Path(root).parent
    with lock_for(store_root / "lock")(exclusive=False):
        lease_for(store_root).record(kind, *values)
        return check() if check else None


def prepare(root: str, driver: str, key: str, layers: list[tuple[str, Callable[[], BinaryIO]]]) -> None:
    """A writable snapshot over ``layers`` (bottom first); the native driver applies their tars."""
    _leased(root, "snapshot", [f"{driver}/{key}"])
    _leased(root, "layer", [lid for lid, _ in layers])
    _driver(root, driver).prepare(key, [lid for lid, _ in layers], [op for _, op in layers])
