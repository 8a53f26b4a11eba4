"""Layer compression and decompression, streamed, every stream hashed once.

gzip is compressed in parallel blocks like pigz: each 1 MiB block (cut at
fixed offsets of the input) is raw deflate with the previous 32 KiB as
dictionary, ended by a sync flush (the last one by a finish), in a thread pool
(zlib releases the GIL); the result is one ordinary gzip member with a fixed
header (no name, no time), so equal input gives equal bytes however it was
written. zstd uses the library's own worker threads (the frame does not depend
on their number). The only module importing zstandard.

Hashing: the uncompressed stream is hashed once (the diff_id); the compressed
one once, by the sink when it digests what it is given (``DigestingSink``,
e.g. the store's BlobWriter), else here.
"""
from __future__ import annotations

import hashlib
import os
import queue
import struct
import threading
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator, Protocol, runtime_checkable

from builder.errors import FormatError, UsageError

BLOCK = 1 << 20
#: pieces compress_layer reads ahead of the compressor
READ_AHEAD = 8
WINDOW = 32 * 1024
#: compressed bytes fed to inflate per step: bounds the copy zlib makes of unconsumed input
_INFLATE_IN = 1 << 16
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no flags, mtime 0, OS unknown


class Sink(Protocol):
    def write(self, data: bytes) -> Any: ...


class Source(Protocol):
    """What compress_layer reads: ``read(n)`` gives up to ``n`` bytes, b"" at the end."""

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...  # (an optional ``read1(n)`` is used when present)


@runtime_checkable
class DigestingSink(Protocol):
    """A sink that hashes what it is given; ``written()`` is ("sha256:<hex>", size) of it so far."""

    def write(self, data: bytes) -> Any: ...

    def written(self) -> tuple[str, int]: ...


@dataclass(frozen=True)
class LayerDigests:
    diff_id: str  # sha256 of the uncompressed tar
    digest: str  # sha256 of the compressed blob
    size: int  # compressed size


def check_compression(name: str, level: int | None) -> None:
    """UsageError unless ``name`` is gzip, zstd or none and ``level`` in its range (gzip 1..9, zstd 1..22)."""
    if name not in ("gzip", "zstd", "none"):
        raise UsageError(f"unknown compression {name!r}: expected gzip, zstd or none")
    if level is not None:
        lo, hi = (1, 9) if name == "gzip" else (1, 22)
        if name != "none" and not lo <= level <= hi:
            raise UsageError(f"compression level {level} out of range {lo}..{hi} for {name}")


class _Out:
    """The compressed side: counts, hashes unless the sink does, passes on."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.hash = None if isinstance(sink, DigestingSink) else hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        if data:
            if self.hash is not None:
                self.hash.update(data)
            self.size += len(data)
            self.sink.write(data)
        return len(data)

    def flush(self) -> None:  # zstandard's stream_writer calls it
        pass

    def digest(self) -> tuple[str, int]:
        if self.hash is None:
            assert isinstance(self.sink, DigestingSink)
            digest, size = self.sink.written()
            if size != self.size:  # the sink saw bytes from elsewhere: its digest is not ours
                raise ValueError(f"sink holds {size} bytes, this layer wrote {self.size}")
            return digest, size
        return "sha256:" + self.hash.hexdigest(), self.size


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a cpuset or taskset leaves fewer than
    the machine has), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _deflate_block(data: bytes, dictionary: bytes, level: int, last: bool) -> tuple[bytes, bytes]:
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, *([dictionary] if dictionary else []))
    return c.compress(data), c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class _ParallelGzip:
    """pigz-style writer: blocks compressed concurrently, written in order."""

    def __init__(self, out: _Out, level: int) -> None:
        self.out, self.level = out, level
        self.workers = max(1, min(8, usable_cpus()))
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gzip")
        self.pending: deque[Future[tuple[bytes, bytes]]] = deque()
        self.held: deque[bytes] = deque()  # input not yet submitted, as it came
        self.held_size = 0
        self.prev_tail = b""
        self.crc, self.length = 0, 0
        out.write(_GZIP_HEADER)

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        self.held.append(data if type(data) is bytes else bytes(data))
        self.held_size += len(data)
        while self.held_size > BLOCK:  # keep the last (partial or whole) block back: it may be the final one
            self._submit(self._take(BLOCK), last=False)

    def _take(self, n: int) -> bytes:
        """The first ``n`` held bytes (all of them if fewer); a held piece of exactly that size
        (what compress_layer's reads give) is passed on as it is, uncopied."""
        n = min(n, self.held_size)
        first = self.held[0]
        if len(first) == n:
            self.held.popleft()
        elif len(first) > n:
            self.held[0], first = first[n:], first[:n]
        else:
            parts, got = [], 0
            while got < n:
                piece = self.held.popleft()
                if got + len(piece) > n:
                    self.held.appendleft(piece[n - got:])
                    piece = piece[:n - got]
                parts.append(piece)
                got += len(piece)
            first = b"".join(parts)
        self.held_size -= n
        return first

    def _submit(self, block: bytes, last: bool) -> None:
        self.pending.append(self.pool.submit(_deflate_block, block, self.prev_tail, self.level, last))
        self.prev_tail = block[-WINDOW:]
        while len(self.pending) > 2 * self.workers:  # bounded memory
            self._drain_one()

    def _drain_one(self) -> None:
        head, tail = self.pending.popleft().result()
        self.out.write(head)
        self.out.write(tail)

    def close(self) -> None:
        self._submit(self._take(self.held_size) if self.held_size else b"", last=True)
        while self.pending:
            self._drain_one()
        self.pool.shutdown()
        self.out.write(struct.pack("<II", self.crc & 0xFFFFFFFF, self.length & 0xFFFFFFFF))

    def abort(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pool.shutdown()


class LayerWriter:
    """Write an uncompressed tar stream in; the compressed blob goes to ``sink``.
    ``close()`` returns the digests of both. Each stream is hashed exactly once:
    the tar here (unless ``hash_input`` is False: the diff_id is then "", the caller
    hashes the input itself, as compress_layer does), the blob by ``sink`` itself when
    it is a ``DigestingSink``."""

    def __init__(self, sink: Sink, compression: str = "gzip", level: int | None = None, *,
                 hash_input: bool = True) -> None:
        check_compression(compression, level)
        self.diff_hash = hashlib.sha256() if hash_input else None  # None: the caller hashes it
        self.out = _Out(sink)
        self._zstd: Any = None
        self._gzip: _ParallelGzip | None = None
        if compression == "gzip":
            self._gzip = _ParallelGzip(self.out, 6 if level is None else level)
        elif compression == "zstd":
            import zstandard
            cctx = zstandard.ZstdCompressor(level=3 if level is None else level, threads=-1)
            self._zstd = cctx.stream_writer(self.out, closefd=False)  # type: ignore[arg-type]

    def write(self, data: bytes) -> int:
        if self.diff_hash is not None:
            self.diff_hash.update(data)
        if self._gzip is not None:
            self._gzip.write(data)
        elif self._zstd is not None:
            self._zstd.write(data)
        else:
            self.out.write(data)
        return len(data)

    def close(self) -> LayerDigests:
        if self._gzip is not None:
            self._gzip.close()
        elif self._zstd is not None:
            self._zstd.flush(1)  # FLUSH_FRAME
            self._zstd.close()
        digest, size = self.out.digest()
        return LayerDigests("" if self.diff_hash is None else "sha256:" + self.diff_hash.hexdigest(), digest, size)

    def abort(self) -> None:
        """Stop after a failure: the gzip threads end; nothing more is written to the sink."""
        if self._gzip is not None:
            self._gzip.abort()


def compress_layer(src: Source, sink: Sink, compression: str = "gzip", level: int | None = None) -> LayerDigests:
    """Compress all of ``src`` into ``sink``; the digests of both sides. ``src`` is read (with
    ``read1`` when it has one: what a pipe holds, up to BLOCK bytes, so the writer on its far
    side never waits for a whole piece to drain) and hashed (the diff_id) one thread ahead, up
    to READ_AHEAD pieces, while this thread compresses: both run outside the GIL, so with a
    producer on the far side of a pipe the three overlap. ``src`` stays open. Raises UsageError
    for an unknown compression or level, and what reading ``src`` or writing ``sink`` raises."""
    w = LayerWriter(sink, compression, level, hash_input=False)
    reader = _Prefetched(src, READ_AHEAD, hashlib.sha256(), partial=True)
    try:
        for piece in reader.pieces():
            w.write(piece)
        digests = w.close()
    except BaseException:
        w.abort()
        raise
    finally:
        reader.halt()
    return LayerDigests("sha256:" + reader.digest.hexdigest(), digests.digest, digests.size)


def detect(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


class _Reader:
    """Reader plumbing shared by the wrappers below (file-like enough for tarfile)."""

    src: BinaryIO

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.src.close()

    def __enter__(self) -> "BinaryIO":
        return self  # type: ignore[return-value]

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Pieces(_Reader):
    """Serves a stream that arrives in pieces (bytes objects) by offset: every byte is
    copied once on its way out (read) or not at all (readinto, or read of a whole piece)."""

    buf: bytes
    pos: int

    def _fill(self) -> bool:
        """Put the next piece in self.buf (self.pos = 0); False at the end of the stream."""
        raise NotImplementedError

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [self.buf[self.pos:]]
            while self._fill():
                parts.append(self.buf)
            self.buf, self.pos = b"", 0
            return b"".join(parts)
        parts, want = [], n
        while want > 0:
            avail = len(self.buf) - self.pos
            if not avail:
                if not self._fill():
                    break
                avail = len(self.buf)
            if self.pos == 0 and want >= avail:
                part = self.buf  # the whole piece: no copy
            else:
                part = self.buf[self.pos:self.pos + min(want, avail)]
            self.pos += len(part)
            want -= len(part)
            parts.append(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, b: Any) -> int:
        with memoryview(b) as view, view.cast("B") as dest:
            got = 0
            while got < len(dest):
                avail = len(self.buf) - self.pos
                if not avail:
                    if not self._fill():
                        break
                    avail = len(self.buf)
                k = min(avail, len(dest) - got)
                dest[got:got + k] = memoryview(self.buf)[self.pos:self.pos + k]
                self.pos += k
                got += k
            return got


class _GzipReader(_Pieces):
    """Streaming gunzip of possibly several members (zlib's C decoder), output in
    pieces of at most BLOCK bytes."""

    def __init__(self, src: BinaryIO, head: bytes) -> None:
        self.src, self.d = src, zlib.decompressobj(31)
        self.pending = head  # compressed bytes read but not yet fed
        self.started = False  # the current member has begun
        self.buf, self.pos = b"", 0
        self.eof = False

    def _fill(self) -> bool:
        """Make output available in self.buf; False at the end of the stream."""
        while not self.eof:
            chunk = self.d.unconsumed_tail or self.pending or self.src.read(_INFLATE_IN)
            self.pending = b""
            if not chunk:
                if self.started:
                    raise FormatError("gzip stream is truncated")
                self.eof = True
                break
            if not self.started:
                chunk = chunk.lstrip(b"\x00")  # zero padding between or after members is ignored
                if not chunk:
                    continue
                self.started = True
            try:
                out = self.d.decompress(chunk, BLOCK)
            except zlib.error as exc:
                raise FormatError(f"corrupt gzip stream: {exc}") from None
            if self.d.eof:  # member done: what follows may be another one
                self.pending = self.d.unused_data
                self.d, self.started = zlib.decompressobj(31), False
            if out:
                self.buf, self.pos = out, 0
                return True
        return False


class _Prefetched(_Pieces):
    """Reads ``src`` ahead in one thread, at most ``depth`` pieces of BLOCK bytes, so
    that decompression, hashing and file reads (all outside the GIL) overlap with a
    consumer that parses the tar and writes files. The thread starts at the first
    read (never before a fork) and ends at the end of the stream or at close();
    its exceptions (FormatError, DigestMismatch) are raised by the read that meets them.
    With ``digest`` (a hashlib object) the thread also hashes every piece it reads; with
    ``partial`` it takes what ``inner.read1`` has (a pipe: whatever the writer put there so
    far, up to BLOCK bytes) instead of waiting for whole pieces."""

    def __init__(self, inner: "_Pieces | Source", depth: int = 4, digest: Any = None, partial: bool = False) -> None:
        self.inner = inner
        self.digest = digest
        self.partial = partial
        self.queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.buf, self.pos, self.done = b"", 0, False

    def _run(self) -> None:
        src = self.inner
        read = getattr(src, "read1", None) if self.partial else None
        try:
            while not self.stop.is_set():
                if isinstance(src, _Pieces):  # take its pieces as they come: no joining
                    piece = src.buf[src.pos:] if src.pos < len(src.buf) or src._fill() else b""
                    src.pos = len(src.buf)
                elif read is not None:
                    piece = read(BLOCK)
                else:
                    piece = src.read(BLOCK)
                if self.digest is not None and piece:
                    self.digest.update(piece)
                self.queue.put(piece)
                if not piece:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self.queue.put(exc)

    def _fill(self) -> bool:
        if self.done:
            return False
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="bale-layer-read", daemon=True)
            self.thread.start()
        item = self.queue.get()
        if isinstance(item, BaseException):
            self.done = True
            raise item
        if not item:
            self.done = True
            return False
        self.buf, self.pos = item, 0
        return True

    def pieces(self) -> Iterator[bytes]:
        """The rest of the stream, piece by piece as read (no copy)."""
        if self.pos < len(self.buf):
            yield self.buf[self.pos:]
        while self._fill():
            self.pos = len(self.buf)
            yield self.buf

    def halt(self) -> None:
        """End the read-ahead thread (after the read it may be in returns); ``inner`` stays open."""
        self.stop.set()
        while self.thread is not None and self.thread.is_alive():  # unblock a put on a full queue
            try:
                self.queue.get_nowait()
            except queue.Empty:
                pass
            self.thread.join(0.01)

    def close(self) -> None:
        self.halt()
        self.inner.close()


class _Peeked(_Reader):
    """``src`` with ``head`` (already read from it) put back in front."""

    def __init__(self, head: bytes, src: BinaryIO) -> None:
        self.head, self.src = head, src

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                out, self.head = self.head + self.src.read(), b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.src.read(n)


def decompress_reader(src: BinaryIO, media_type_or_compression: str | None = None) -> BinaryIO:
    """An uncompressed reader over a layer blob; the format is found by magic bytes
    (media types lie in the wild), the argument is only a hint. Compressed blobs are
    decompressed one piece ahead in a thread. Corrupt or truncated gzip raises
    FormatError while reading."""
    head = src.read(4)
    kind = detect(head)
    if kind == "gzip":
        return _Prefetched(_GzipReader(src, head))  # type: ignore[return-value]
    peeked = _Peeked(head, src)
    if kind == "zstd":
        import zstandard
        reader = zstandard.ZstdDecompressor().stream_reader(peeked, read_across_frames=True)  # type: ignore[arg-type]
        return _Prefetched(reader)  # type: ignore[return-value]
    return peeked  # type: ignore[return-value]
