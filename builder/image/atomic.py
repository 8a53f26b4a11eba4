"""Whole-file replacement that no crash can leave half-written (temp file, fsync, rename)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_file(path: Path, *, tmp_dir: Path | None = None, prefix: str = ".tmp-",
                mode: int = 0o644) -> Iterator[BinaryIO]:
    """A file to write that replaces ``path`` (with ``mode``) when the ``with`` block ends: a temp file
    in ``tmp_dir`` (default ``path``'s directory; it must be on the same filesystem), flushed,
    fsynced and renamed over ``path``. An exception in the block (or OSError here) leaves
    ``path`` as it was and the temp file gone, and propagates. Readers see the old content or
    the new, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir or path.parent, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, data: bytes, *, tmp_dir: Path | None = None, prefix: str = ".tmp-",
                 mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (with ``mode``) through atomic_file. Raises OSError; the
    temp file is gone."""
    with atomic_file(path, tmp_dir=tmp_dir, prefix=prefix, mode=mode) as fh:
        fh.write(data)
