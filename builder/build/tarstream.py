"""A streaming tar writer whose headers come from tarfile (PAX format, names
surrogate-escaped) and whose file bodies go from the source fd to the output
fd in the kernel (os.sendfile), not through Python buffers.

The stream is what ``tarfile.open(mode="w|", format=PAX_FORMAT)`` writes: each
header, the body padded to 512 bytes, two zero blocks and zero padding to a
10240-byte record at the end. A body is always exactly the size its header
states: a file that grew while being copied is cut at that size (what it was
when its header was made), one that shrank is a BuildError naming it.
"""
from __future__ import annotations

import errno
import os
import stat
import tarfile
from typing import IO, BinaryIO

from builder.errors import BuildError

#: bytes asked of one sendfile / read
CHUNK = 1 << 20
_NUL = bytes(tarfile.BLOCKSIZE)


class TarWriter:
    """Writes tar members to ``out`` (a binary file object; its fd is used for bodies when it has
    one, after a flush). Nothing is closed: ``close`` writes the end-of-archive blocks only."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.offset = 0  # bytes written (the record padding at the end depends on it)
        try:
            self._fd: int | None = out.fileno()
            self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        except (OSError, ValueError, AttributeError):  # io.BytesIO and the like: bodies are read
            self._fd, self._regular = None, False

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.offset += len(data)

    def header(self, ti: tarfile.TarInfo) -> None:
        """``ti``'s header blocks (PAX records first when a field needs them)."""
        self._write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _pad(self, size: int) -> None:
        rest = size % tarfile.BLOCKSIZE
        if rest:
            self._write(_NUL[rest:])

    def add_fd(self, ti: tarfile.TarInfo, fd: int, what: str) -> None:
        """A regular file's header and ``ti.size`` bytes read from ``fd`` (at offset 0). ``what``
        names the source in the one-line error a shrunk file gives."""
        self.header(ti)
        done = self._sendfile(fd, ti.size) if self._fd is not None else 0
        while done < ti.size:  # no fd to send to, or sendfile refused: read and write
            chunk = os.pread(fd, min(CHUNK, ti.size - done), done)
            if not chunk:
                raise BuildError(f"copy source {what}: file shrank while being copied "
                                 f"(read {done} of {ti.size} bytes)")
            self._write(chunk)
            done += len(chunk)
        self._pad(ti.size)

    def _sendfile(self, fd: int, size: int) -> int:
        """Bytes of ``fd`` sent by the kernel, from offset 0 up to ``size`` (fewer only at EOF,
        which the caller reports, or when sendfile is not supported here: the caller reads)."""
        assert self._fd is not None
        self.out.flush()
        done = 0
        while done < size:
            try:
                sent = os.sendfile(self._fd, fd, done, min(CHUNK, size - done))
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) and done == 0:
                    return 0
                raise
            if sent == 0:
                break
            done += sent
            self.offset += sent
        if self._regular and done:  # the buffered file object caches its position: tell it
            self.out.seek(os.lseek(self._fd, 0, os.SEEK_CUR))
        return done

    def add_stream(self, ti: tarfile.TarInfo, data: IO[bytes] | None) -> None:
        """A member whose body (``ti.size`` bytes) is read from ``data`` (an archive member);
        a short body is tarfile's ReadError, as tarfile.addfile raises it."""
        self.header(ti)
        if not ti.size:
            return
        if data is None:
            raise tarfile.ReadError(f"{ti.name}: no data")
        left = ti.size
        while left:
            chunk = data.read(min(CHUNK, left))
            if not chunk:
                raise tarfile.ReadError("unexpected end of data")
            self._write(chunk)
            left -= len(chunk)
        self._pad(ti.size)

    def close(self) -> None:
        """Two zero blocks, then zero padding to a whole 10240-byte record (what tarfile writes)."""
        self._write(_NUL * 2)
        rest = self.offset % tarfile.RECORDSIZE
        if rest:
            self._write(bytes(tarfile.RECORDSIZE - rest))
