"""Looking for a secret's bytes on disk while and after a build runs."""
from __future__ import annotations

import os
from pathlib import Path


def scan_for(secret: bytes, *dirs: Path) -> list[str]:
    """Paths of the regular files under ``dirs`` holding ``secret`` (symlinks not followed; the tree
    changes while bale runs: entries that vanish or cannot be read are skipped)."""
    hits = []
    for d in dirs:
        for dirpath, _dirs, files in os.walk(d, onerror=lambda e: None):
            for name in files:
                p = os.path.join(dirpath, name)
                try:
                    if not os.path.islink(p) and secret in Path(p).read_bytes():
                        hits.append(p)
                except OSError:
                    pass
    return hits
