"""Errors of the snapshotter (reported by the CLI as one line, exit 1)."""
from __future__ import annotations


class SnapshotError(Exception):
    """A layer could not be applied, diffed, mounted or removed; the message names what and why."""
