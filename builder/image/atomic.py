"""Whole-file replacement that no crash can leave half-written (temp file, fsync, rename)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, tmp_dir: Path | None = None, prefix: str = ".tmp-") -> None:
    """Replace ``path`` with ``data`` (mode 0644): written to a temp file in ``tmp_dir`` (default
    ``path``'s directory; it must be on the same filesystem), fsynced, renamed over ``path``.
    Readers see the old content or the new, never a part. Raises OSError; the temp file is gone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir or path.parent, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
