"""The snapshotter's public surface: drivers by name, and the overlay probe."""
from snapshotter.apply import ApplyResult, apply_tar
from snapshotter.diff import Change
from snapshotter.drivers import FuseOverlayDriver, NativeDriver, OverlayDriver, get_driver, probe_overlay
from snapshotter.errors import SnapshotError
from snapshotter.safepath import secure_join

__all__ = ["ApplyResult", "apply_tar", "Change", "FuseOverlayDriver", "NativeDriver", "OverlayDriver",
           "get_driver", "probe_overlay", "SnapshotError", "secure_join"]
