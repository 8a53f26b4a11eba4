"""The registry client against real docker-registry servers (four auth/TLS set-ups)."""
import gzip
import io
import json
import os
import tarfile

import pytest

from builder.image import oci
from builder.errors import AuthError, DigestMismatch, NotFoundError, RegistryError
from builder.image.registry import client as client_mod
from builder.image.registry.client import RegistryClient
from builder.image.registry.options import RegistryOptions


def options_for(reg, **kw):
    if reg.scheme == "http":
        kw.setdefault("tls_verify", False)
    else:
        kw.setdefault("cert_dir", str(reg.cert_dir))
    if reg.username:
        kw.setdefault("creds", f"{reg.username}:{reg.password}")
    return RegistryOptions(**kw)


def tiny_image(payload: bytes = b"hello"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ti = tarfile.TarInfo("hello.txt")
        ti.size = len(payload)
        t.addfile(ti, io.BytesIO(payload))
    layer = gzip.compress(buf.getvalue(), mtime=0)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [oci.sha256_digest(buf.getvalue())]}}).encode()
    ldesc = oci.Descriptor(oci.OCI_LAYER_GZIP, oci.sha256_digest(layer), len(layer))
    cdesc = oci.Descriptor(oci.OCI_CONFIG, oci.sha256_digest(cfg), len(cfg))
    man = oci.Manifest(cdesc, (ldesc,)).to_bytes()
    return {ldesc.digest: layer, cdesc.digest: cfg}, [cdesc, ldesc], man


def push(c, repo, tag, payload=b"hello"):
    blobs, descs, man = tiny_image(payload)
    results = [c.push_blob(repo, d, lambda off, d=d: io.BytesIO(blobs[d.digest][off:])) for d in descs]
    return results, c.put_manifest(repo, tag, man, oci.OCI_MANIFEST), man, blobs, descs


def test_push_then_pull_verified(any_registry):
    c = RegistryClient(any_registry.host, options_for(any_registry))
    results, digest, man, blobs, descs = push(c, "bale/tiny", "v1")
    assert results == ["uploaded", "uploaded"]
    data, mt, got = c.get_manifest("bale/tiny", "v1")
    assert (data, mt, got) == (man, oci.OCI_MANIFEST, digest)
    assert c.head_manifest("bale/tiny", "v1")[0] == digest
    sink = io.BytesIO()
    c.fetch_blob("bale/tiny", descs[1], sink)
    assert sink.getvalue() == blobs[descs[1].digest]
    assert c.list_tags("bale/tiny") == ["v1"]
    # present blobs are never sent again
    assert push(c, "bale/tiny", "v2")[0] == ["exists", "exists"]


def test_cross_repository_mount(registry):
    c = RegistryClient(registry.host, options_for(registry))
    _, _, _, blobs, descs = push(c, "bale/src", "v1", b"mount me")
    got = c.push_blob("bale/dst", descs[1], lambda off: io.BytesIO(blobs[descs[1].digest][off:]),
                      mount_from=["bale/src"])
    assert got == "mounted"
    assert c.blob_exists("bale/dst", descs[1].digest)


def test_cross_repository_mount_with_tokens(registry_token):
    c = RegistryClient(registry_token.host, options_for(registry_token))
    _, _, _, blobs, descs = push(c, "bale/tsrc", "v1", b"token mount")
    got = c.push_blob("bale/tdst", descs[1], lambda off: io.BytesIO(blobs[descs[1].digest][off:]),
                      mount_from=["bale/tsrc"])
    assert got == "mounted"
    scopes = [s for r in registry_token.token_server.requests for s in r["scopes"]]
    assert {"type": "repository", "name": "bale/tsrc", "actions": ["pull"]} in scopes


def _big_blob(n):
    data = os.urandom(n)
    return data, oci.Descriptor("application/octet-stream", oci.sha256_digest(data), len(data))


def test_chunked_upload(registry, monkeypatch):
    monkeypatch.setattr(client_mod, "MONOLITHIC_LIMIT", 1 << 20)
    monkeypatch.setattr(client_mod, "CHUNK_SIZE", 1 << 20)
    data, desc = _big_blob(3 * (1 << 20) + 5)
    c = RegistryClient(registry.host, options_for(registry))
    assert c.push_blob("bale/chunked", desc, lambda off: io.BytesIO(data[off:])) == "uploaded"
    sink = io.BytesIO()
    c.fetch_blob("bale/chunked", desc, sink)
    assert sink.getvalue() == data


def test_pull_into_the_store_hashes_each_byte_once_and_sends_in_large_pieces(registry, tmp_path, monkeypatch):
    """`bale pull`'s path (a blob fetched into the store's BlobWriter): the writer's own hash is
    the check, the client does not hash the bytes a second time; a mismatch is still the
    client's one-line DigestMismatch. Pushes hand the connection pieces of SEND_CHUNK bytes."""
    import hashlib
    from builder.image.store import Store
    data, desc = _big_blob(3 * (1 << 20) + 5)
    c = RegistryClient(registry.host, options_for(registry))
    sends = []
    real_sendall = __import__("socket").socket.sendall
    monkeypatch.setattr("socket.socket.sendall", lambda self, b, *a: sends.append(len(b)) or real_sendall(self, b, *a))
    assert c.push_blob("bale/once", desc, lambda off: io.BytesIO(data[off:])) == "uploaded"
    monkeypatch.undo()
    assert max(sends) == client_mod.SEND_CHUNK
    fed = []
    real_new = hashlib.new

    class Counting:
        def __init__(self, h):
            self.h, self.name = h, h.name

        def update(self, b):
            fed.append(len(b))
            self.h.update(b)

        def hexdigest(self):
            return self.h.hexdigest()

        def copy(self):
            return Counting(self.h.copy())
    monkeypatch.setattr(hashlib, "new", lambda *a, **kw: Counting(real_new(*a, **kw)))
    store = Store(tmp_path)
    with store.writer(desc.digest, desc.size) as w:
        c.fetch_blob("bale/once", desc, w)
        w.commit()
    assert store.blob_path(desc.digest).read_bytes() == data and sum(fed) == len(data)

    class Lying:  # a digesting sink whose hash disagrees: the client trusts it, and so refuses
        def __init__(self):
            self.n = 0

        def write(self, b):
            self.n += len(b)

        def written(self):
            return "sha256:" + "0" * 64, self.n
    with pytest.raises(DigestMismatch, match=r"content does not match its digest$"):
        c.fetch_blob("bale/once", desc, Lying())


def test_interrupted_chunk_resumes_from_registry_offset(registry, flaky_proxy, monkeypatch):
    monkeypatch.setattr(client_mod, "MONOLITHIC_LIMIT", 1 << 20)
    monkeypatch.setattr(client_mod, "CHUNK_SIZE", 1 << 20)
    monkeypatch.setenv("BALE_RETRY_BASE_DELAY", "0.01")
    data, desc = _big_blob(4 * (1 << 20))
    opened_at = []

    def open_at(off):
        opened_at.append(off)
        return io.BytesIO(data[off:])

    # the first PATCH is cut after 300 KiB of its body
    flaky_proxy.add(method="PATCH", path="/blobs/uploads/", times=1, cut_request_after=300 * 1024)
    c = RegistryClient(flaky_proxy.host, RegistryOptions(tls_verify=False))
    assert c.push_blob("bale/resumed", desc, open_at) == "uploaded"
    calls = [(e["method"], e["status"]) for e in flaky_proxy.log if "/blobs/uploads/" in e["path"]]
    # the client asks the registry where the upload stands; distribution cancels a session whose stored
    # size no longer matches its _state offset (registry/handlers/blobupload.go, ResumeBlobUpload:
    # "upload resumed at wrong offset"), so the status GET finds no session and the client starts a
    # new one from byte 0
    assert calls[:4] == [("POST", 202), ("PATCH", None), ("GET", 404), ("POST", 202)]
    assert opened_at == [0] + [o * (1 << 20) for o in range(4)]
    sink = io.BytesIO()
    RegistryClient(registry.host, options_for(registry)).fetch_blob("bale/resumed", desc, sink)
    assert sink.getvalue() == data


def test_download_resumes_with_range(registry, flaky_proxy):
    data, desc = _big_blob(2 * (1 << 20))
    c = RegistryClient(registry.host, options_for(registry))
    c.push_blob("bale/dl", desc, lambda off: io.BytesIO(data[off:]))
    flaky_proxy.add(method="GET", path=f"/blobs/{desc.digest}", cut_response_after=700 * 1024)
    sink = io.BytesIO()
    RegistryClient(flaky_proxy.host, RegistryOptions(tls_verify=False)).fetch_blob("bale/dl", desc, sink)
    assert sink.getvalue() == data
    gets = [e for e in flaky_proxy.log if e["method"] == "GET" and desc.digest in e["path"]]
    assert len(gets) == 2 and gets[1]["status"] == 206


def test_large_blob_written_behind_keeps_errors_and_leaves_nothing(registry, flaky_proxy, tmp_path):
    """Blobs of WRITE_BEHIND_MIN and more reach their sink from a second thread: a sink that fails
    ends the pull with one line and no second GET (the disk, not the connection, failed); a blob
    whose bytes do not match its digest fails with the client's one-line DigestMismatch and the
    store keeps nothing of it."""
    from builder.image.store import Store
    data, desc = _big_blob(3 * (1 << 20))
    assert desc.size >= client_mod.WRITE_BEHIND_MIN
    RegistryClient(registry.host, options_for(registry)).push_blob("bale/behind", desc, lambda off: io.BytesIO(data[off:]))

    class Full:
        def __init__(self):
            self.n = 0

        def write(self, b):
            self.n += 1
            if self.n == 3:
                raise OSError(28, "No space left on device")
    proxied = RegistryClient(flaky_proxy.host, RegistryOptions(tls_verify=False))
    with pytest.raises(RegistryError, match=r"^blob sha256:\S+ of .*: download failed: .*No space left on device$"):
        proxied.fetch_blob("bale/behind", desc, Full())
    assert len([e for e in flaky_proxy.log if e["method"] == "GET" and desc.digest in e["path"]]) == 1
    store = Store(tmp_path)
    with store.writer(desc.digest, desc.size) as w:  # the right blob, then one byte flipped in the sink
        orig = w.write
        w.write = lambda b: orig(bytes([b[0] ^ 1]) + bytes(b[1:]) if w.size == 0 else b)  # type: ignore[method-assign]
        with pytest.raises(DigestMismatch, match=r"content does not match its digest$"):
            proxied.fetch_blob("bale/behind", desc, w)
    assert not store.has_blob(desc.digest) and not any(store.tmp_dir.iterdir())


def test_retries_on_500_and_429(registry, flaky_proxy, monkeypatch):
    monkeypatch.setenv("BALE_RETRY_BASE_DELAY", "0.01")
    c = RegistryClient(registry.host, options_for(registry))
    _, digest, *_ = push(c, "bale/retry", "v1")
    flaky_proxy.add(method="GET", path="/manifests/v1", times=2, status=500)
    flaky_proxy.add(method="GET", path="/manifests/v1", times=1, status=429, retry_after=0)
    got = RegistryClient(flaky_proxy.host, RegistryOptions(tls_verify=False)).get_manifest("bale/retry", "v1")
    assert got[2] == digest
    assert [e["status"] for e in flaky_proxy.log if "/manifests/v1" in e["path"]] == [500, 500, 429, 200]


def test_wrong_password(registry_htpasswd, registry_token):
    for reg in (registry_htpasswd, registry_token):
        c = RegistryClient(reg.host, options_for(reg, creds="bale:wrong"))
        with pytest.raises(AuthError, match="wrong username or password"):
            c.get_manifest("bale/tiny", "v1")


def test_anonymous_is_refused(registry_htpasswd, tmp_path, monkeypatch):
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
    c = RegistryClient(registry_htpasswd.host, RegistryOptions(cert_dir=str(registry_htpasswd.cert_dir)))
    with pytest.raises(AuthError, match="authentication required"):
        c.get_manifest("bale/tiny", "v1")


def test_not_found_and_unreachable(registry, monkeypatch):
    monkeypatch.setenv("BALE_RETRY_BASE_DELAY", "0.01")
    c = RegistryClient(registry.host, options_for(registry))
    with pytest.raises(NotFoundError, match=f"{registry.host}/bale/absent:v9"):
        c.get_manifest("bale/absent", "v9")
    dead = RegistryClient("127.0.0.1:1", RegistryOptions(tls_verify=False))
    with pytest.raises(RegistryError, match="cannot reach 127.0.0.1:1: connection refused"):
        dead.get_manifest("x", "latest")


def test_tls_without_ca_fails_clearly(registry_tls):
    c = RegistryClient(registry_tls.host, RegistryOptions())
    with pytest.raises(RegistryError, match="certificate verify failed"):
        c.get_manifest("x", "latest")


def test_manifest_digest_is_verified(registry):
    c = RegistryClient(registry.host, options_for(registry))
    _, digest, *_ = push(c, "bale/verify", "v1")
    wrong = "sha256:" + "0" * 64
    with pytest.raises((DigestMismatch, NotFoundError)):
        c.get_manifest("bale/verify", wrong)
