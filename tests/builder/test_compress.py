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
