"""A streaming tar writer for layer diffs, byte for byte what
``tarfile.open(mode="w|", format=PAX_FORMAT)`` with ``addfile`` writes, at a
fraction of its per-entry cost.

Headers: the common entry (ASCII name and link target of at most 100 bytes, ids,
size and mtime within the octal fields, no user or group name, no PAX records such
as xattrs) gets its ustar block built here directly; every other entry goes through
``tarfile.TarInfo.tobuf(PAX_FORMAT, "utf-8", "surrogateescape")``, so the output is
tarfile's in every case (tests compare both over many entries). ``tarinfo_header``
gives the same for a TarInfo (what COPY's tar, builder/build/tarstream.py, holds).

Bodies: small files are read into one output buffer; larger ones are sent from
their fd to the output fd by the kernel (``os.sendfile``: into a pipe it moves page
references, no copy through Python). Output goes to the fd of ``out`` in writes of
about ``FLUSH_AT`` bytes; a file object without an fd (io.BytesIO) gets ``write``
calls instead. A body is exactly the size its header states: a file that grew
since its stat is cut there, one that shrank is a FileShrank (a SnapshotError) naming it.
A body can also come from a file object (``add_reader``: an archive's member).
"""
from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
from typing import IO, BinaryIO, Callable, Mapping

from snapshotter.errors import SnapshotError

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240
#: bodies up to this many bytes are read into the buffer; larger ones are sent by the kernel
SMALL_BODY = 1 << 16
#: bytes buffered before one write to the output fd (a quarter of a 1 MiB pipe: the writer goes
#: on while the reader drains the rest)
FLUSH_AT = 1 << 18
#: bytes asked of one sendfile
SEND_CHUNK = 1 << 22

_NUL = bytes(BLOCK)
_OCTAL7 = 8 ** 7
_OCTAL11 = 8 ** 11
_NO_DEVICE = bytes(16)
_TAIL = b"ustar\x0000" + bytes(64)  # magic and version, empty uname and gname
_PREFIX_PAD = bytes(155 + 12)  # the empty prefix field and the block's last 12 bytes
_CHECK_BASE = 8 * ord(" ") + sum(_TAIL)

REGTYPE, LNKTYPE, SYMTYPE = tarfile.REGTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE
CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE = tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE


class FileShrank(SnapshotError):
    """A file gave fewer bytes than its header states: ``what`` names it, ``done`` bytes were read
    of ``size``."""

    def __init__(self, what: str, done: int, size: int) -> None:
        super().__init__(f"{what}: file shrank while its layer was written (read {done} of {size} bytes)")
        self.what, self.done, self.size = what, done, size


def tar_header(name: str, type_: bytes, mode: int, uid: int, gid: int, mtime: float, *, size: int = 0,
               linkname: str = "", devmajor: int = 0, devminor: int = 0,
               pax: Mapping[str, str] | None = None, uname: str = "", gname: str = "") -> bytes:
    """The header blocks tarfile writes for this entry in PAX format (a directory's name gets its
    trailing "/" as tarfile adds it): one 512-byte block, or PAX extended records and then the
    block. ``name``/``linkname``/``uname``/``gname`` are str with undecodable bytes
    surrogate-escaped (os.fsdecode); ``type_`` one of tarfile's type bytes; ``mtime`` in seconds
    (a float, as tarfile does, gets a PAX "mtime" record). Values a ustar field cannot hold go to
    PAX records, as tarfile puts them."""
    if type_ == DIRTYPE and not name.endswith("/"):
        name += "/"
    if (not pax and not uname and not gname and len(name) <= 100 and len(linkname) <= 100 and name.isascii()
            and linkname.isascii()
            and 0 <= uid < _OCTAL7 and 0 <= gid < _OCTAL7 and 0 <= size < _OCTAL11 and 0 <= mtime < _OCTAL11
            and type(mtime) is int):
        if type_ == CHRTYPE or type_ == BLKTYPE:
            if not (0 <= devmajor < _OCTAL7 and 0 <= devminor < _OCTAL7):
                return _tarfile_header(name, type_, mode, uid, gid, mtime, size, linkname, devmajor, devminor, pax,
                                       uname, gname)
            dev = b"%07o\0%07o\0" % (devmajor, devminor)
        else:
            dev = _NO_DEVICE
        raw_name, raw_link = name.encode("ascii"), linkname.encode("ascii")
        numbers = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode & 0o7777, uid, gid, size, mtime)
        # the checksum is the sum of the block's bytes with its own field as eight spaces
        # (tarfile.calc_chksums); the zero padding adds nothing
        check = sum(raw_name) + sum(numbers) + _CHECK_BASE + type_[0] + sum(raw_link) + sum(dev)
        return b"".join((raw_name, bytes(100 - len(raw_name)), numbers, b"%06o\0 " % check, type_, raw_link,
                         bytes(100 - len(raw_link)), _TAIL, dev, _PREFIX_PAD))
    return _tarfile_header(name, type_, mode, uid, gid, mtime, size, linkname, devmajor, devminor, pax, uname, gname)


def _tarfile_header(name: str, type_: bytes, mode: int, uid: int, gid: int, mtime: float, size: int,
                    linkname: str, devmajor: int, devminor: int, pax: Mapping[str, str] | None, uname: str,
                    gname: str) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.size = type_, mode, uid, gid, mtime, size
    ti.linkname, ti.devmajor, ti.devminor = linkname, devmajor, devminor
    ti.uname, ti.gname = uname, gname
    ti.pax_headers = dict(pax or {})
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def tarinfo_header(ti: tarfile.TarInfo) -> bytes:
    """``ti.tobuf(PAX_FORMAT, "utf-8", "surrogateescape")``'s bytes, through tar_header (the
    fields tobuf writes: name, type, mode, ids and their names, mtime, size, link target, device
    numbers, PAX records)."""
    return tar_header(ti.name, ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, size=ti.size, linkname=ti.linkname,
                      devmajor=ti.devmajor, devminor=ti.devminor, pax=ti.pax_headers, uname=ti.uname,
                      gname=ti.gname)


class TarStream:
    """Writes entries to ``out``: ``add`` for entries without a body, ``add_file`` for a
    regular file's, ``add_reader`` for one read from a file object, ``close`` for the
    end-of-archive blocks and the record padding (``out`` itself stays open). Data ``out`` had
    buffered is flushed first; afterwards a seekable ``out``'s position is where the archive
    ends. Up to about FLUSH_AT bytes are held back until ``flush`` or ``close``."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.offset = 0  # bytes of archive so far
        self.buf = bytearray()
        try:
            fd: int | None = out.fileno()
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # io.BytesIO and the like
            fd = None
        self.fd = fd
        self._send = fd is not None  # False once the kernel refused sendfile to this fd
        if fd is not None:
            out.flush()

    def add(self, header: bytes) -> None:
        """An entry whose header says it has no body (size 0)."""
        self.buf += header
        self.offset += len(header)
        if len(self.buf) >= FLUSH_AT:
            self.flush()

    def add_file(self, header: bytes, fd: int, size: int, what: str) -> None:
        """``header`` and then ``size`` bytes of ``fd`` from offset 0, padded to a block.
        ``what`` names the file in the FileShrank a file shorter than ``size`` gives."""
        self.add(header)
        done = 0
        if size > SMALL_BODY and self._send:
            self.flush()
            done = self._sendfile(fd, size)
        self._body(lambda at, n: os.pread(fd, n, at), done, size, lambda got: FileShrank(what, got, size))

    def add_reader(self, header: bytes, data: IO[bytes], size: int) -> None:
        """``header`` and then ``size`` bytes read from ``data``, padded to a block; a shorter
        ``data`` is tarfile.ReadError("unexpected end of data"), as tarfile.addfile raises it."""
        self.add(header)
        self._body(lambda _at, n: data.read(n), 0, size, lambda _got: tarfile.ReadError("unexpected end of data"))

    def _body(self, read: Callable[[int, int], bytes], done: int, size: int,
              short: Callable[[int], Exception]) -> None:
        """The body's bytes from ``done`` up to ``size``, each chunk ``read(offset, at most n)``
        (empty at the end: ``short(bytes so far)`` is raised), then the padding to a block."""
        while done < size:
            chunk = read(done, min(FLUSH_AT, size - done))
            if not chunk:
                raise short(done)
            self.buf += chunk
            done += len(chunk)
            if len(self.buf) >= FLUSH_AT:
                self.flush()
        self.offset += size
        rest = size % BLOCK
        if rest:
            self.buf += _NUL[rest:]
            self.offset += BLOCK - rest

    def _sendfile(self, fd: int, size: int) -> int:
        """Bytes of ``fd`` the kernel sent to the output, from offset 0 up to ``size``: fewer at
        EOF (the caller reads on and reports it), none when this output refuses sendfile."""
        assert self.fd is not None
        done = 0
        while done < size:
            try:
                sent = os.sendfile(self.fd, fd, done, min(SEND_CHUNK, size - done))
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) and done == 0:
                    self._send = False
                    return 0
                raise
            if sent == 0:
                break
            done += sent
        return done

    def flush(self) -> None:
        """Write what is held back to ``out``."""
        if not self.buf:
            return
        if self.fd is None:
            self.out.write(bytes(self.buf))
        else:
            with memoryview(self.buf) as view:
                done = 0
                while done < len(view):
                    done += os.write(self.fd, view[done:])
        self.buf.clear()

    def close(self) -> None:
        """Two zero blocks and zero padding to a whole 10240-byte record (what tarfile writes)."""
        end = self.offset + 2 * BLOCK
        self.add(bytes(2 * BLOCK + (-end % RECORD)))
        self.flush()
        if self.fd is not None:
            try:
                if stat.S_ISREG(os.fstat(self.fd).st_mode):  # the file object caches its position
                    self.out.seek(os.lseek(self.fd, 0, os.SEEK_CUR))
            except (OSError, ValueError):
                pass
