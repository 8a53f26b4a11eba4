"""Layer compression: valid gzip/zstd streams, one-pass digests, determinism."""
import gzip
import hashlib
import io
import subprocess
import shutil

import pytest

from builder.image import compress
from builder.errors import UsageError


def _payload(n: int) -> bytes:
    # compressible but not trivial, larger than several blocks
    return b"".join(hashlib.sha256(str(i % 5000).encode()).digest() * 4 for i in range(n // 128))


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_round_trip_and_digests(kind):
    data = _payload(5 * compress.BLOCK + 123)
    out = io.BytesIO()
    d = compress.compress_layer(io.BytesIO(data), out, kind)
    blob = out.getvalue()
    assert d.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert d.digest == "sha256:" + hashlib.sha256(blob).hexdigest() and d.size == len(blob)
    assert compress.decompress_reader(io.BytesIO(blob), kind).read() == data
    if kind == "gzip":
        assert gzip.decompress(blob) == data


@pytest.mark.skipif(not shutil.which("gzip"), reason="gzip(1) not installed: no independent gzip check")
def test_parallel_gzip_passes_gzip_t(tmp_path):
    data = _payload(3 * compress.BLOCK)
    p = tmp_path / "x.gz"
    with open(p, "wb") as fh:
        compress.compress_layer(io.BytesIO(data), fh, "gzip", 9)
    subprocess.run(["gzip", "-t", str(p)], check=True)


def test_output_is_deterministic():
    data = _payload(2 * compress.BLOCK + 7)
    a, b = io.BytesIO(), io.BytesIO()
    compress.compress_layer(io.BytesIO(data), a, "gzip")
    compress.compress_layer(io.BytesIO(data), b, "gzip")
    assert a.getvalue() == b.getvalue()


def test_empty_input_is_valid_gzip():
    out = io.BytesIO()
    compress.compress_layer(io.BytesIO(b""), out, "gzip")
    assert gzip.decompress(out.getvalue()) == b""


def test_bad_levels_are_usage_errors():
    with pytest.raises(UsageError):
        compress.LayerWriter(io.BytesIO(), "gzip", 12)
    with pytest.raises(UsageError):
        compress.LayerWriter(io.BytesIO(), "lz4")


def test_reads_multi_member_gzip():
    blob = gzip.compress(b"abc") + gzip.compress(b"def")
    assert compress.decompress_reader(io.BytesIO(blob)).read() == b"abcdef"


# --- identical bytes: the writer against plain reference implementations of the format ---------
def _gzip_reference(data: bytes, level: int = 6) -> bytes:
    """The format compress.py promises, done serially: 1 MiB blocks at fixed offsets, each raw
    deflate with the previous 32 KiB as dictionary, sync-flushed, the last one finished."""
    import struct
    import zlib
    B = compress.BLOCK
    blocks = [data[i:i + B] for i in range(0, len(data), B)] or [b""]
    out = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"]
    prev = b""
    for i, block in enumerate(blocks):
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, *([prev] if prev else []))
        out.append(c.compress(block) + c.flush(zlib.Z_FINISH if i == len(blocks) - 1 else zlib.Z_SYNC_FLUSH))
        prev = block[-32 * 1024:]
    out.append(struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF))
    return b"".join(out)


def _zstd_reference(data: bytes) -> bytes:
    import zstandard
    out = io.BytesIO()
    w = zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(out, closefd=False)
    w.write(data)
    w.flush(zstandard.FLUSH_FRAME)
    w.close()  # bale has always closed after the flush: that adds an empty frame; kept so digests stay
    return out.getvalue()


def _mixed(n_random: int, n_text: int) -> bytes:
    import random
    return random.Random(7).randbytes(n_random) + _payload(n_text)


@pytest.mark.parametrize("size", [0, 3, 2 * compress.BLOCK, 3 * compress.BLOCK + 999])
@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_bytes_do_not_depend_on_how_the_stream_is_cut(kind, size):
    data = _mixed(size // 2, size - size // 2)
    want = _gzip_reference(data) if kind == "gzip" else _zstd_reference(data)
    for steps in ([len(data) + 1], [7, 100_000, compress.BLOCK, 3 * compress.BLOCK], [65536] * (len(data) // 65536 + 1)):
        out = io.BytesIO()
        w = compress.LayerWriter(out, kind)
        pos = 0
        for step in steps:
            w.write(data[pos:pos + step])
            pos += step
        d = w.close()
        assert out.getvalue() == want, steps
        assert d.digest == "sha256:" + hashlib.sha256(want).hexdigest() and d.size == len(want)
        assert d.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


# --- every stream hashed once --------------------------------------------------------------------
class _CountingHash:
    """Test double for a hashlib object: counts the bytes fed to every instance."""

    fed = 0

    def __init__(self, real):
        self._real = real
        self.name = real.name

    def update(self, data):
        _CountingHash.fed += len(data)
        self._real.update(data)

    def hexdigest(self):
        return self._real.hexdigest()

    def digest(self):
        return self._real.digest()

    def copy(self):
        return _CountingHash(self._real.copy())


@pytest.fixture
def counted_hashing(monkeypatch):
    real_new, real_sha256 = hashlib.new, hashlib.sha256
    def counted(real, *a, **kw):
        h = _CountingHash(real(*a, **kw))
        _CountingHash.fed += len(a[-1]) if a and isinstance(a[-1], (bytes, bytearray)) else 0
        return h
    monkeypatch.setattr(hashlib, "new", lambda *a, **kw: counted(real_new, *a, **kw))
    monkeypatch.setattr(hashlib, "sha256", lambda *a, **kw: counted(real_sha256, *a, **kw))
    _CountingHash.fed = 0
    return _CountingHash


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_layer_commit_into_the_store_hashes_each_stream_once(tmp_path, counted_hashing, kind):
    """The way `bale commit` and `bud` store a layer (builder/scripted.py commit_layer): a
    LayerWriter into a store BlobWriter. The tar is hashed once (diff_id) and the blob once
    (the store's own hash, which names the file), not a second time by the LayerWriter."""
    from builder.image.store import Store
    store = Store(tmp_path)
    data = _mixed(compress.BLOCK, 2 * compress.BLOCK)
    counted_hashing.fed = 0
    with store.writer() as blob:
        w = compress.LayerWriter(blob, kind)
        for i in range(0, len(data), 1 << 20):
            w.write(data[i:i + (1 << 20)])
        d = w.close()
        desc = blob.commit()
    counted = counted_hashing.fed
    stored = store.blob_path(desc.digest).read_bytes()
    assert counted == len(data) + len(stored)
    assert d.digest == desc.digest == "sha256:" + hashlib.sha256(stored).hexdigest() and d.size == len(stored)
    assert d.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_store_layer_hashes_each_stream_once_and_stores_nothing_for_an_empty_tar(tmp_path, counted_hashing, kind):
    """The commit's sink (builder/image/layerblob.py store_layer, what commit_layer hands the
    snapshot's diff to): the tar is read and hashed a thread ahead of the compressor, the blob
    hashed by the store's writer only; an archive without members stores nothing."""
    import tarfile
    from builder.image.layerblob import store_layer
    from builder.image.store import Store
    store = Store(tmp_path)
    data = _mixed(compress.BLOCK, 3 * compress.BLOCK + 700)
    counted_hashing.fed = 0
    d, desc = store_layer(io.BytesIO(data), store, kind, None)
    stored = store.blob_path(desc.digest).read_bytes()
    assert counted_hashing.fed == len(data) + len(stored)
    assert d.digest == desc.digest == "sha256:" + hashlib.sha256(stored).hexdigest() and d.size == len(stored)
    assert d.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert compress.decompress_reader(io.BytesIO(stored)).read() == data
    empty = io.BytesIO()
    tarfile.open(fileobj=empty, mode="w|").close()
    assert store_layer(io.BytesIO(empty.getvalue()), store, kind, None) is None
    assert sorted(p.name for p in (tmp_path / "blobs" / "sha256").iterdir()) == [desc.digest.split(":")[1]]


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_compress_layer_stops_its_reader_when_the_sink_fails(kind):
    """A sink error (a full disk) ends the read-ahead thread, with its queue full, and is raised."""
    import threading

    class Full:
        def write(self, data):
            raise OSError(28, "No space left on device")

    before = threading.active_count()
    src = io.BytesIO(_mixed(compress.BLOCK, 40 * compress.BLOCK))
    with pytest.raises(OSError, match="No space left"):
        compress.compress_layer(src, Full(), kind)
    assert threading.active_count() == before and not src.closed


def test_plain_sinks_still_get_the_blob_digest(counted_hashing):
    data = _payload(compress.BLOCK)
    out = io.BytesIO()
    counted_hashing.fed = 0
    d = compress.compress_layer(io.BytesIO(data), out, "gzip")
    assert counted_hashing.fed == len(data) + len(out.getvalue())
    assert d.digest == "sha256:" + hashlib.sha256(out.getvalue()).hexdigest()


# --- the gzip reader ------------------------------------------------------------------------------
def test_gzip_reader_reads_exact_sizes_and_into_buffers():
    data = _mixed(compress.BLOCK, 2 * compress.BLOCK + 5)
    blob = io.BytesIO()
    compress.compress_layer(io.BytesIO(data), blob, "gzip")
    r = compress.decompress_reader(io.BytesIO(blob.getvalue()), "gzip")
    got, sizes = [], [1, 511, 10240, 3 << 20, 4096]
    for n in sizes:
        part = r.read(n)
        assert len(part) == min(n, len(data) - sum(map(len, got)))
        got.append(part)
    buf = bytearray(100_000)
    while k := r.readinto(buf):
        got.append(bytes(buf[:k]))
    assert r.read(10) == b"" and b"".join(got) == data


def test_gzip_reader_skips_zero_padding_between_members():
    blob = gzip.compress(b"abc") + b"\x00" * 700 + gzip.compress(b"def") + b"\x00" * 10
    r = compress.decompress_reader(io.BytesIO(blob))
    assert r.read(2) + r.read() == b"abcdef"


def test_gzip_reader_reports_truncation_and_corruption():
    from builder.errors import FormatError
    blob = gzip.compress(_payload(1 << 16))
    with pytest.raises(FormatError, match="truncated"):
        compress.decompress_reader(io.BytesIO(blob[:-100])).read()
    bad = blob[:40] + bytes(b ^ 0xFF for b in blob[40:80]) + blob[80:]
    with pytest.raises(FormatError, match="corrupt"):
        compress.decompress_reader(io.BytesIO(bad)).read()


# --- read-ahead ------------------------------------------------------------------------------------
def test_read_ahead_starts_at_the_first_read_and_ends_at_close():
    import threading
    data = _mixed(compress.BLOCK, 6 * compress.BLOCK)
    for kind in ("gzip", "zstd"):
        blob = io.BytesIO()
        compress.compress_layer(io.BytesIO(data), blob, kind)
        before = threading.active_count()
        r = compress.decompress_reader(io.BytesIO(blob.getvalue()), kind)
        assert threading.active_count() == before  # nothing runs before a read (a fork may come first)
        assert r.read(10) == data[:10]
        r.close()  # mid-stream, with the read-ahead queue full: must not hang
        assert threading.active_count() == before
        with compress.decompress_reader(io.BytesIO(blob.getvalue()), kind) as r:
            assert r.read() == data
        assert threading.active_count() == before


def test_read_ahead_raises_the_readers_errors_in_the_consumer():
    from builder.errors import DigestMismatch, FormatError
    from builder.image.store import VerifiedReader
    blob = gzip.compress(_payload(3 * compress.BLOCK))
    r = compress.decompress_reader(io.BytesIO(blob[:-50]))
    with pytest.raises(FormatError, match="truncated"):
        while r.read(65536):
            pass
    wrong = "sha256:" + "0" * 64
    r = compress.decompress_reader(VerifiedReader(io.BytesIO(blob), wrong, None, "blob x"))
    with pytest.raises(DigestMismatch):
        while r.read(65536):
            pass
