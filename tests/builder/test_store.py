"""The local store: content addressing, verification, records, locking, gc."""
import json
import multiprocessing
import os

import pytest

from builder.image import oci
from builder.image.commit import Layer, history_entry, write_image
from builder.errors import DigestMismatch, ImageNotFound, StoreError
from builder.image.store import Store


def _image(store: Store, payload: bytes, names=("localhost/t:1",)):
    blob = store.put_bytes(payload)
    layer = Layer(oci.Descriptor(oci.OCI_LAYER, blob, len(payload)), blob)
    cfg = oci.ImageConfig(config={"Cmd": ["sh"]}, history=[history_entry("test", empty_layer=False, timestamp=0)])
    return write_image(store, cfg, [layer], names=list(names), timestamp=0)


def test_put_and_read_verified(tmp_path):
    s = Store(tmp_path)
    d = s.put_bytes(b"hello")
    assert d == oci.sha256_digest(b"hello") and s.read_blob(d) == b"hello"
    s.blob_path(d).write_bytes(b"hellp")  # corrupt it on disk
    with pytest.raises(DigestMismatch):
        s.read_blob(d)


def test_writer_with_wrong_expected_digest_leaves_nothing(tmp_path):
    s = Store(tmp_path)
    with pytest.raises(DigestMismatch):
        with s.writer(expected=oci.sha256_digest(b"other")) as w:
            w.write(b"data")
            w.commit()
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []
    assert list(s.tmp_dir.iterdir()) == []


def test_image_records_names_and_lookup(tmp_path):
    s = Store(tmp_path)
    a = _image(s, b"a", ["localhost/a:1"])
    b = _image(s, b"b", ["localhost/b:1"])
    assert s.get_image("localhost/a:1").id == a.id
    assert s.get_image(a.id.split(":")[1][:12]).manifest_digest == a.manifest_digest
    s.tag("localhost/a:1", "localhost/b:1")  # a name moves to the image it now tags
    assert s.get_image("localhost/b:1").id == a.id
    assert s.find_image(b.id).names == []
    with pytest.raises(ImageNotFound, match="nope"):
        s.get_image("nope")


def test_add_image_refuses_missing_blobs(tmp_path):
    s = Store(tmp_path)
    cfg = s.put_bytes(oci.ImageConfig().to_bytes())
    man = oci.Manifest(oci.Descriptor(oci.OCI_CONFIG, cfg, s.blob_size(cfg)),
                       (oci.Descriptor(oci.OCI_LAYER, oci.sha256_digest(b"absent"), 6),))
    d = s.put_bytes(man.to_bytes())
    with pytest.raises(StoreError, match="missing"):
        s.add_image(d, ["x"])
    assert s.images() == []


def test_gc_removes_only_unreferenced(tmp_path):
    s = Store(tmp_path)
    keep = _image(s, b"keep", ["localhost/keep:1"])
    gone = _image(s, b"gone", ["localhost/gone:1"])
    stray = s.put_bytes(b"stray")
    s.remove_image(gone)
    removed = set(s.gc())
    assert stray in removed and oci.sha256_digest(b"gone") in removed
    assert s.has_blob(oci.sha256_digest(b"keep")) and s.has_blob(keep.manifest_digest)


def _add_many(root: str, start: int) -> None:
    s = Store(root)
    for i in range(start, start + 15):
        _image(s, f"p{i}".encode(), [f"localhost/p:{i}"])


def test_concurrent_processes_do_not_lose_records(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_many, args=(str(tmp_path), n * 100)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    names = {n for r in Store(tmp_path).images() for n in r.names}
    assert len(names) == 45
    json.loads((tmp_path / "images.json").read_text())


def test_diff_id_mapping(tmp_path):
    s = Store(tmp_path)
    d = s.put_bytes(b"compressed")
    desc = oci.Descriptor(oci.OCI_LAYER_GZIP, d, 10)
    s.set_diff_id(oci.sha256_digest(b"plain"), desc)
    assert s.blob_for_diff_id(oci.sha256_digest(b"plain")) == desc
    assert s.blob_for_diff_id(oci.sha256_digest(b"plain"), oci.OCI_LAYER_ZSTD) is None
    os.unlink(s.blob_path(d))
    assert s.blob_for_diff_id(oci.sha256_digest(b"plain")) is None
