"""COPY's and ADD's tar stream: entries given as tarfile.TarInfo, written by the layer writer
(snapshotter.tarwriter.TarStream: tarfile's PAX-format bytes, headers from tarinfo_header, file
bodies sent from the source fd to the output fd by the kernel), with COPY's errors.

The stream is what ``tarfile.open(mode="w|", format=PAX_FORMAT)`` writes: each
header, the body padded to 512 bytes, two zero blocks and zero padding to a
10240-byte record at the end. A body is always exactly the size its header
states: a file that grew while being copied is cut at that size (what it was
when its header was made), one that shrank is a BuildError naming it.
"""
from __future__ import annotations

import tarfile
from typing import IO, BinaryIO

from builder.errors import BuildError
from snapshotter.tarwriter import FileShrank, TarStream, tarinfo_header


class TarWriter:
    """Writes tar members to ``out`` (a binary file object; its fd is used when it has one, after
    a flush). Nothing is closed: ``close`` writes the end-of-archive blocks only. What is held
    back (snapshotter.tarwriter.FLUSH_AT) reaches ``out`` by ``close``."""

    def __init__(self, out: BinaryIO) -> None:
        self._stream = TarStream(out)

    def header(self, ti: tarfile.TarInfo) -> None:
        """``ti``'s header blocks (PAX records first when a field needs them)."""
        self._stream.add(tarinfo_header(ti))

    def add_fd(self, ti: tarfile.TarInfo, fd: int, what: str) -> None:
        """A regular file's header and ``ti.size`` bytes read from ``fd`` (at offset 0). ``what``
        names the source in the one-line error a shrunk file gives (what came before it, and its
        header and the bytes it had, are written first)."""
        try:
            self._stream.add_file(tarinfo_header(ti), fd, ti.size, what)
        except FileShrank as exc:
            self._stream.flush()
            raise BuildError(f"copy source {what}: file shrank while being copied "
                             f"(read {exc.done} of {exc.size} bytes)") from None

    def add_stream(self, ti: tarfile.TarInfo, data: IO[bytes] | None) -> None:
        """A member whose body (``ti.size`` bytes) is read from ``data`` (an archive member);
        a short body is tarfile's ReadError, as tarfile.addfile raises it."""
        if data is None:
            self.header(ti)
            if ti.size:
                raise tarfile.ReadError(f"{ti.name}: no data")
            return
        self._stream.add_reader(tarinfo_header(ti), data, ti.size)

    def close(self) -> None:
        """Two zero blocks, then zero padding to a whole 10240-byte record (what tarfile writes)."""
        self._stream.close()
