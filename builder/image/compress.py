"""Layer compression and decompression, streamed, hashed in one pass.

gzip is compressed in parallel blocks like pigz: each ~1 MiB block is raw
deflate with the previous 32 KiB as dictionary, ended by a sync flush, in a
thread pool (zlib releases the GIL); the result is one ordinary gzip member
with a fixed header (no name, no time), so equal input gives equal bytes.
zstd uses the library's own worker threads. The only module importing
zstandard.
"""
from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from builder.errors import FormatError, UsageError

BLOCK = 1 << 20
WINDOW = 32 * 1024
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no flags, mtime 0, OS unknown


class Sink(Protocol):
    def write(self, data: bytes) -> Any: ...


@dataclass(frozen=True)
class LayerDigests:
    diff_id: str  # sha256 of the uncompressed tar
    digest: str  # sha256 of the compressed blob
    size: int  # compressed size


def check_compression(name: str, level: int | None) -> None:
    if name not in ("gzip", "zstd", "none"):
        raise UsageError(f"unknown compression {name!r}: expected gzip, zstd or none")
    if level is not None:
        lo, hi = (1, 9) if name == "gzip" else (1, 22)
        if name != "none" and not lo <= level <= hi:
            raise UsageError(f"compression level {level} out of range {lo}..{hi} for {name}")


class _Hashing:
    def __init__(self, sink: Sink) -> None:
        self.sink, self.hash, self.size = sink, hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        if data:
            self.hash.update(data)
            self.size += len(data)
            self.sink.write(data)


def _deflate_block(data: bytes, dictionary: bytes, level: int, last: bool) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, *([dictionary] if dictionary else []))
    return c.compress(data) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class _ParallelGzip:
    """pigz-style writer: blocks compressed concurrently, written in order."""

    def __init__(self, out: _Hashing, level: int) -> None:
        self.out, self.level = out, level
        self.workers = max(1, min(8, os.cpu_count() or 1))
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gzip")
        self.pending: deque[Future[bytes]] = deque()
        self.buf = bytearray()
        self.prev_tail = b""
        self.crc, self.length = 0, 0
        out.write(_GZIP_HEADER)

    def write(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        self.buf += data
        while len(self.buf) > BLOCK:  # keep one block back: the last one must be finished
            self._submit(bytes(self.buf[:BLOCK]), last=False)
            del self.buf[:BLOCK]

    def _submit(self, block: bytes, last: bool) -> None:
        self.pending.append(self.pool.submit(_deflate_block, block, self.prev_tail, self.level, last))
        self.prev_tail = block[-WINDOW:]
        while len(self.pending) > 2 * self.workers:  # bounded memory
            self.out.write(self.pending.popleft().result())

    def close(self) -> None:
        self._submit(bytes(self.buf), last=True)
        self.buf.clear()
        while self.pending:
            self.out.write(self.pending.popleft().result())
        self.pool.shutdown()
        self.out.write(struct.pack("<II", self.crc & 0xFFFFFFFF, self.length & 0xFFFFFFFF))


class LayerWriter:
    """Write an uncompressed tar stream in; the compressed blob goes to ``sink``.
    ``close()`` returns the digests of both."""

    def __init__(self, sink: Sink, compression: str = "gzip", level: int | None = None) -> None:
        check_compression(compression, level)
        self.diff_hash = hashlib.sha256()
        self.out = _Hashing(sink)
        self._zstd: Any = None
        self._gzip: _ParallelGzip | None = None
        if compression == "gzip":
            self._gzip = _ParallelGzip(self.out, 6 if level is None else level)
        elif compression == "zstd":
            import zstandard
            cctx = zstandard.ZstdCompressor(level=3 if level is None else level, threads=-1)
            self._zstd = cctx.stream_writer(_NoClose(self.out), closefd=False)

    def write(self, data: bytes) -> int:
        self.diff_hash.update(data)
        if self._gzip is not None:
            self._gzip.write(bytes(data))
        elif self._zstd is not None:
            self._zstd.write(data)
        else:
            self.out.write(bytes(data))
        return len(data)

    def close(self) -> LayerDigests:
        if self._gzip is not None:
            self._gzip.close()
        elif self._zstd is not None:
            self._zstd.flush(1)  # FLUSH_FRAME
            self._zstd.close()
        return LayerDigests("sha256:" + self.diff_hash.hexdigest(), "sha256:" + self.out.hash.hexdigest(),
                            self.out.size)


class _NoClose:
    def __init__(self, sink: _Hashing) -> None:
        self.sink = sink

    def write(self, data: bytes) -> int:
        self.sink.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


def compress_layer(src: BinaryIO, sink: Sink, compression: str = "gzip", level: int | None = None) -> LayerDigests:
    w = LayerWriter(sink, compression, level)
    while chunk := src.read(BLOCK):
        w.write(chunk)
    return w.close()


def detect(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


class _GzipReader:
    """Streaming gunzip of possibly several members (zlib's C decoder)."""

    def __init__(self, src: BinaryIO) -> None:
        self.src, self.d, self.buf, self.eof = src, zlib.decompressobj(31), b"", False
        self.in_member = False

    def _feed(self, chunk: bytes) -> None:
        try:
            self.buf += self.d.decompress(chunk, BLOCK)
        except zlib.error as exc:
            raise FormatError(f"corrupt gzip stream: {exc}") from None
        self.in_member = not self.d.eof
        if self.d.eof:
            rest = self.d.unused_data
            self.d = zlib.decompressobj(31)
            if rest.strip(b"\x00"):  # another member follows (zero padding is ignored)
                self._feed(rest)

    def read(self, n: int = -1) -> bytes:
        while not self.eof and (n < 0 or len(self.buf) < n):
            chunk = self.d.unconsumed_tail or self.src.read(BLOCK)
            if not chunk:
                if self.in_member:
                    raise FormatError("gzip stream is truncated")
                self.eof = True
                break
            self._feed(chunk)
        if n < 0:
            out, self.buf = self.buf, b""
        else:
            out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.src.close()

    def __enter__(self) -> "BinaryIO":
        return self  # type: ignore[return-value]

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Peeked:
    def __init__(self, head: bytes, src: BinaryIO) -> None:
        self.head, self.src = head, src

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0:
                out, self.head = self.head + self.src.read(), b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.src.read(n)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.src.close()

    def __enter__(self) -> "BinaryIO":
        return self  # type: ignore[return-value]

    def __exit__(self, *exc: object) -> None:
        self.close()


def decompress_reader(src: BinaryIO, media_type_or_compression: str | None = None) -> BinaryIO:
    """An uncompressed reader over a layer blob; the format is found by magic bytes
    (media types lie in the wild), the argument is only a hint."""
    head = src.read(4)
    peeked = _Peeked(head, src)
    kind = detect(head)
    if kind == "gzip":
        return _GzipReader(peeked)  # type: ignore[return-value]
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(peeked, read_across_frames=True)  # type: ignore[return-value]
    return peeked  # type: ignore[return-value]
