"""Reading tar streams with the bounds Go's archive/tar sets, so that what a
header claims never decides how much memory or time reading it takes.

Go (src/archive/tar/format.go, reader.go): PAX extended headers, GNU long
names and long links are refused when larger than ``maxSpecialFileSize``
(1 MiB), and sparse maps count against the same bound. Python's tarfile reads
any of them whole, whatever size the header states; ``open_stream`` gives a
tarfile whose TarInfo checks the size first.
"""
from __future__ import annotations

import tarfile
from typing import IO, Any

_tar: Any = tarfile  # private helpers (nti, InvalidHeaderError) the stubs do not list

#: Go archive/tar's maxSpecialFileSize
MAX_SPECIAL_FILE_SIZE = 1 << 20


class _Bounded(tarfile.TarInfo):
    """TarInfo refusing special headers (PAX, GNU long name/link, sparse maps) over 1 MiB."""

    def _check(self, what: str) -> None:
        if self.size > MAX_SPECIAL_FILE_SIZE:
            raise tarfile.HeaderError(f"{what} header of {self.size} bytes is larger than the 1 MiB "
                                      "Go's archive/tar accepts")

    def _proc_pax(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        self._check("PAX")
        result: tarfile.TarInfo = getattr(super(), "_proc_pax")(tarfile_)
        return result

    def _proc_gnulong(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        self._check("GNU long name")
        result: tarfile.TarInfo = getattr(super(), "_proc_gnulong")(tarfile_)
        return result

    def _proc_sparse(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        # old GNU sparse: extension blocks of 21 entries each, read while the flag says so
        fileobj: Any = tarfile_.fileobj
        structs, isextended, origsize = self._sparse_structs  # type: ignore[attr-defined]
        del self._sparse_structs  # type: ignore[attr-defined]
        blocks = 0
        while isextended:
            blocks += 1
            if blocks * tarfile.BLOCKSIZE > MAX_SPECIAL_FILE_SIZE:
                raise tarfile.HeaderError("GNU sparse map larger than 1 MiB")
            buf = fileobj.read(tarfile.BLOCKSIZE)
            if len(buf) < tarfile.BLOCKSIZE:
                raise tarfile.HeaderError("truncated GNU sparse map")
            pos = 0
            for _ in range(21):
                try:
                    offset = _tar.nti(buf[pos:pos + 12])
                    numbytes = _tar.nti(buf[pos + 12:pos + 24])
                except (_tar.InvalidHeaderError, ValueError):
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
                pos += 24
            isextended = bool(buf[504])
        self.sparse = structs
        self.offset_data = fileobj.tell()
        tarfile_.offset = self.offset_data + getattr(self, "_block")(self.size)
        self.size = origsize
        return self

    def _proc_gnusparse_10(self, next: tarfile.TarInfo, pax_headers: dict[str, str],  # noqa: A002
                           tarfile_: tarfile.TarFile) -> None:
        # PAX sparse 1.0: the map is decimal lines at the start of the data
        fileobj: Any = tarfile_.fileobj
        buf = bytearray()
        numbers: list[int] = []
        want: int | None = None
        pos = 0
        while want is None or len(numbers) < want:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) > MAX_SPECIAL_FILE_SIZE:
                    raise tarfile.HeaderError("GNU sparse 1.0 map larger than 1 MiB")
                chunk = fileobj.read(tarfile.BLOCKSIZE)
                if not chunk:
                    raise tarfile.HeaderError("truncated GNU sparse 1.0 map")
                buf += chunk
                continue
            field = bytes(buf[pos:nl]).strip()
            pos = nl + 1
            if not field.isdigit() or len(field) > 20:
                raise tarfile.HeaderError("invalid GNU sparse 1.0 map")
            if want is None:
                want = int(field) * 2
                if want * 2 > MAX_SPECIAL_FILE_SIZE:
                    raise tarfile.HeaderError("GNU sparse 1.0 map larger than 1 MiB")
            else:
                numbers.append(int(field))
        next.offset_data = fileobj.tell()
        next.sparse = list(zip(numbers[::2], numbers[1::2]))  # type: ignore[assignment]


def open_stream(fileobj: IO[bytes] | None = None, name: str | None = None) -> tarfile.TarFile:
    """A streaming (``r|*``) tarfile over ``fileobj`` or the file ``name`` with Go's header bounds;
    names that are not UTF-8 come back surrogate-escaped (byte-exact through os functions)."""
    return tarfile.open(name=name, fileobj=fileobj, mode="r|*", tarinfo=_Bounded,  # noqa: SIM115
                        encoding="utf-8", errors="surrogateescape")
