"""A layer tar stream stored as a compressed blob: the commit's sink (builder.scripted's
commit_layer reads the snapshot's diff from the namespace helper and hands it here)."""
from __future__ import annotations

from typing import IO, Any, Callable

from builder.image.compress import LayerDigests, compress_layer
from builder.image.oci import Descriptor
from builder.image.store import Store


def store_layer(src: IO[bytes], store: Store, compression: str, level: int | None,
                settle: Callable[[], Any] | None = None) -> tuple[LayerDigests, Descriptor] | None:
    """Compress the whole uncompressed tar read from ``src`` into a new store blob; its
    digests (diff_id of the tar, digest and size of the blob) and the blob's descriptor (media
    type ''), or None when the tar has no member (nothing is stored then). The tar is read and
    hashed a thread ahead of the compressor (compress.compress_layer), the blob hashed once,
    by the store's writer. Raises UsageError for an unknown compression or level, OSError
    from the store. ``settle``: called once the tar is read, before the blob is kept; what it
    raises discards the blob (the producer of the tar failed)."""
    head = _FirstBlock(src)
    with store.writer() as blob:
        digests = compress_layer(head, blob, compression, level)
        if settle is not None:
            settle()
        if head.empty:
            blob.abort()
            return None
        desc = blob.commit()
    return digests, desc


class _FirstBlock:
    """``src`` read through, noting whether the archive has a member: an archive without one
    starts with a zero block."""

    def __init__(self, src: IO[bytes]) -> None:
        self.src, self.head = src, b""

    @property
    def empty(self) -> bool:
        return not any(self.head)

    def read(self, n: int = -1, /) -> bytes:
        return self._note(self.src.read(n))

    def read1(self, n: int = -1, /) -> bytes:
        """What the pipe holds now, up to ``n`` bytes (at least one; b"" at the end)."""
        return self._note(getattr(self.src, "read1", self.src.read)(n))

    def _note(self, data: bytes) -> bytes:
        if len(self.head) < 512:
            self.head += data[:512 - len(self.head)]
        return data

    def close(self) -> None:
        self.src.close()
