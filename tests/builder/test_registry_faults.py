"""Registry retries that converge (issue 12 item 7), through FlakyProxy in front of the real
docker-registry (distribution 2.8).

distribution answers an upload-status GET for an empty upload with ``Range: 0-0``
(registry/handlers/blobupload.go, blobUploadResponse: ``endRange := buh.Upload.Size();
if endRange > 0 { endRange = endRange - 1 }``), so that answer must be read as nothing stored.
"""
import hashlib
import io
import os
import time

import pytest

from builder.errors import RegistryError
from builder.image import oci
from builder.image.registry import client as client_mod
from builder.image.registry.client import RegistryClient, upload_offset
from builder.image.registry.options import RegistryOptions, parse_duration
from builder.errors import UsageError

CHUNK = 256 * 1024


def _blob(size):
    data = os.urandom(size)
    return data, oci.Descriptor(oci.OCI_LAYER_GZIP, "sha256:" + hashlib.sha256(data).hexdigest(), size)


def _fetch_direct(registry, repo, desc):
    sink = io.BytesIO()
    RegistryClient(registry.host, RegistryOptions(tls_verify=False)).fetch_blob(repo, desc, sink)
    return sink.getvalue()


def test_upload_offset_reads_distribution_ranges():
    assert upload_offset("0-0", 7) == 0  # empty upload, clamped
    assert upload_offset("bytes=0-0", 7) == 0
    assert upload_offset("0-262143", 0) == 262144
    assert upload_offset(None, 5) == 5
    assert upload_offset("junk", 5) == 5


def test_parse_duration_go_style():
    assert parse_duration("30s", "x") == 30
    assert parse_duration("1m30s", "x") == 90
    assert parse_duration("500ms", "x") == 0.5
    assert parse_duration("2", "x") == 2
    with pytest.raises(UsageError, match="--retry-delay: invalid duration"):
        parse_duration("soon", "--retry-delay")


@pytest.mark.parametrize("status,retry_after", [(500, None), (503, None), (429, 1)])
def test_first_chunk_fault_keeps_digest(registry, flaky_proxy, monkeypatch, status, retry_after):
    monkeypatch.setattr(client_mod, "MONOLITHIC_LIMIT", CHUNK)
    monkeypatch.setattr(client_mod, "CHUNK_SIZE", CHUNK)
    monkeypatch.setenv("BALE_RETRY_BASE_DELAY", "0.01")
    data, desc = _blob(3 * CHUNK + 17)
    flaky_proxy.add(method="PATCH", path="/blobs/uploads/", times=1, status=status, retry_after=retry_after)
    c = RegistryClient(flaky_proxy.host, RegistryOptions(tls_verify=False))
    assert c.push_blob(f"bale/fault{status}", desc, lambda off: io.BytesIO(data[off:])) == "uploaded"
    patches = [e for e in flaky_proxy.log if e["method"] == "PATCH"]
    assert patches[0]["status"] == status
    # after the fault the upload starts again at byte 0, not byte 1
    assert [e["content_range"] for e in patches[1:]] == \
        [f"{o}-{min(o + CHUNK, len(data)) - 1}" for o in range(0, len(data), CHUNK)]
    if retry_after:
        status_get = next(e for e in flaky_proxy.log if e["method"] == "GET" and "/blobs/uploads/" in e["path"])
        assert status_get["time"] - patches[0]["time"] >= retry_after - 0.05
    assert _fetch_direct(registry, f"bale/fault{status}", desc) == data


def test_fault_on_a_later_chunk_resumes_there(registry, flaky_proxy, monkeypatch):
    monkeypatch.setattr(client_mod, "MONOLITHIC_LIMIT", CHUNK)
    monkeypatch.setattr(client_mod, "CHUNK_SIZE", CHUNK)
    monkeypatch.setenv("BALE_RETRY_BASE_DELAY", "0.01")
    data, desc = _blob(3 * CHUNK)
    c = RegistryClient(flaky_proxy.host, RegistryOptions(tls_verify=False))
    opened = []

    def open_at(off):
        opened.append(off)
        if off == CHUNK and len(opened) == 2:  # the second chunk meets a 503 with Retry-After 0
            flaky_proxy.add(method="PATCH", path="/blobs/uploads/", times=1, status=503, retry_after=0)
        return io.BytesIO(data[off:])
    assert c.push_blob("bale/later", desc, open_at) == "uploaded"
    assert opened == [0, CHUNK, CHUNK, 2 * CHUNK]
    assert _fetch_direct(registry, "bale/later", desc) == data


def test_pull_restarts_blob_when_registry_ignores_range(registry, flaky_proxy):
    data, desc = _blob(2 * (1 << 20))
    RegistryClient(registry.host, RegistryOptions(tls_verify=False)).push_blob(
        "bale/norange", desc, lambda off: io.BytesIO(data[off:]))
    flaky_proxy.ignore_range = True
    flaky_proxy.add(method="GET", path=f"/blobs/{desc.digest}", times=2, cut_response_after=700 * 1024)
    sink = io.BytesIO()
    RegistryClient(flaky_proxy.host, RegistryOptions(tls_verify=False)).fetch_blob("bale/norange", desc, sink)
    assert sink.getvalue() == data
    gets = [e for e in flaky_proxy.log if e["method"] == "GET" and desc.digest in e["path"]]
    assert [g["status"] for g in gets] == [200, 200, 200]  # cut, cut, whole: each answer from byte 0


def test_pull_restart_with_reset_hook(registry, flaky_proxy):
    data, desc = _blob(1 << 20)
    RegistryClient(registry.host, RegistryOptions(tls_verify=False)).push_blob(
        "bale/norange2", desc, lambda off: io.BytesIO(data[off:]))
    flaky_proxy.ignore_range = True
    flaky_proxy.add(method="GET", path=f"/blobs/{desc.digest}", times=1, cut_response_after=300 * 1024)
    sink = io.BytesIO()

    def reset():
        sink.seek(0)
        sink.truncate()
    RegistryClient(flaky_proxy.host, RegistryOptions(tls_verify=False)).fetch_blob("bale/norange2", desc, sink, reset)
    assert sink.getvalue() == data


def test_hung_registry_fails_after_the_timeout(flaky_proxy):
    flaky_proxy.add(method="*", path="", times=1000, hang=True)
    c = RegistryClient(flaky_proxy.host, RegistryOptions(tls_verify=False, timeout=1.5, retries=3))
    t0 = time.monotonic()
    with pytest.raises(RegistryError) as info:
        c.get_manifest("bale/hung", "latest")
    elapsed = time.monotonic() - t0
    msg = str(info.value)
    assert flaky_proxy.host in msg and "did not answer within 1.5 s" in msg and "\n" not in msg
    assert elapsed < 1.5 * 3 + 2  # the https probe (≤ timeout), one try; no retries of a timeout


def test_retry_count_and_fixed_delay(registry, flaky_proxy):
    flaky_proxy.add(method="GET", path="/v2/bale/none/manifests/", times=100, status=500)
    c = RegistryClient(flaky_proxy.host, RegistryOptions(tls_verify=False, retries=1, retry_delay=0.3))
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match="answered 500"):
        c.get_manifest("bale/none", "v1")
    assert time.monotonic() - t0 >= 0.3
    assert len([e for e in flaky_proxy.log if "/manifests/" in e["path"]]) == 2


def test_pull_restarts_blob_when_range_is_refused_with_416(registry, flaky_proxy):
    data, desc = _blob(1 << 20)
    RegistryClient(registry.host, RegistryOptions(tls_verify=False)).push_blob(
        "bale/r416", desc, lambda off: io.BytesIO(data[off:]))
    flaky_proxy.add(method="GET", path=f"/blobs/{desc.digest}", times=1, cut_response_after=300 * 1024)
    flaky_proxy.add(method="GET", path=f"/blobs/{desc.digest}", times=1, status=416)
    sink = io.BytesIO()
    RegistryClient(flaky_proxy.host, RegistryOptions(tls_verify=False)).fetch_blob("bale/r416", desc, sink)
    assert sink.getvalue() == data
    assert [e["status"] for e in flaky_proxy.log if desc.digest in e["path"]] == [200, 416, 200]
