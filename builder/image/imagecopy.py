"""Copy one image between any two locations (pull, push, commit, bud outputs).

Blobs go in parallel and verified; the manifest is written only after every
blob is confirmed. When the format does not change the manifest bytes are
copied verbatim, so the digest stays the same everywhere. Converting to Docker
media types rewrites the manifest, and zstd layers (which Docker schema2 cannot
carry) are recompressed to gzip.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, BinaryIO

from builder.image.compress import LayerWriter, decompress_reader
from builder.image.oci import (Descriptor, Manifest, Platform, is_docker_type, layer_compression, parse_config,
                               parse_manifest, to_docker_type, to_oci_type)
from builder.image.transports import Destination, Source

if TYPE_CHECKING:
    from builder.progress import Progress

WORKERS = 4


@dataclass
class CopyResult:
    manifest_digest: str
    manifest: bytes
    config: bytes
    media_type: str


class _RecompressedSource(Source):
    """Serves gzip recompressions of some blobs (spooled) and the original source's others."""

    def __init__(self, inner: Source, tmp_dir: Any) -> None:
        self.inner, self.name, self.tmp_dir = inner, inner.name, tmp_dir
        self.files: dict[str, Any] = {}

    def add(self, original: Descriptor) -> Descriptor:
        spool = tempfile.TemporaryFile(dir=self.tmp_dir)  # noqa: SIM115
        with self.inner.open_at(original, 0) as raw:
            w = LayerWriter(spool, "gzip")
            r = decompress_reader(raw, original.media_type)
            while chunk := r.read(1 << 20):
                w.write(chunk)
            d = w.close()
        new = Descriptor(to_docker_type("application/vnd.oci.image.layer.v1.tar+gzip"), d.digest, d.size)
        self.files[new.digest] = spool
        return new

    def write_blob(self, desc: Descriptor, sink: Any) -> None:
        f = self.files.get(desc.digest)
        if f is None:
            return self.inner.write_blob(desc, sink)
        f.seek(0)
        while chunk := f.read(1 << 20):
            sink.write(chunk)

    def open_at(self, desc: Descriptor, offset: int) -> BinaryIO:
        f = self.files.get(desc.digest)
        if f is None:
            return self.inner.open_at(desc, offset)
        f.seek(0)
        data = io.BytesIO()
        while chunk := f.read(1 << 20):
            data.write(chunk)
        data.seek(offset)
        return data

    def mount_from(self, registry: str, desc: Descriptor) -> Any:
        return self.inner.mount_from(registry, desc)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def copy_image(src: Source, dst: Destination, *, platform: Platform | None = None, image_format: str | None = None,
               progress: "Progress | None" = None, tmp_dir: Any = None) -> CopyResult:
    """Copy ``src`` to ``dst``; ``image_format`` "oci"/"docker" converts, None keeps the source's."""
    data, mt, _digest, index_digest = src.manifest(platform)
    man = parse_manifest(data, f"manifest of {src.name}")
    config = _read_small(src, man.config)
    cfg = parse_config(config, f"config of {src.name}")
    want_docker = dst.requires_docker or (not dst.requires_oci and (
        image_format == "docker" or (image_format is None and is_docker_type(mt))))
    blob_src: Source = src
    new_layers = list(man.layers)
    if want_docker and any(layer_compression(l.media_type) == "zstd" for l in man.layers):
        rec = _RecompressedSource(src, tmp_dir)
        new_layers = [rec.add(l) if layer_compression(l.media_type) == "zstd" else l for l in man.layers]
        blob_src = rec
    if want_docker != is_docker_type(mt) or new_layers != list(man.layers):
        conv = to_docker_type if want_docker else to_oci_type
        man = Manifest(replace(man.config, media_type=conv(man.config.media_type)),
                       tuple(replace(l, media_type=conv(l.media_type)) for l in new_layers),
                       conv(man.media_type), {} if want_docker else dict(man.annotations))
        data, mt = man.to_bytes(), man.media_type
    if hasattr(dst, "index_digest") and index_digest:
        dst.index_digest = index_digest  # type: ignore[attr-defined]
    try:
        todo = [d for d in (*man.layers, man.config) if not dst.has_blob(d)]
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="blob") as pool:
            for fut in [pool.submit(dst.put_blob, d, blob_src) for d in todo]:
                fut.result()
        got = dst.put_manifest(data, mt, config, list(cfg.diff_ids))
        repo, store = getattr(getattr(src, "ref", None), "repo_name", None), getattr(dst, "store", None)
        if repo and store is not None and hasattr(store, "note_source"):
            for d in (*man.layers, man.config):  # blobs it already had are in that repository too
                store.note_source(d.digest, repo)
    except BaseException:
        dst.abort()
        raise
    finally:
        if blob_src is not src:
            blob_src.close()
    if progress:
        progress.log(f"Writing manifest {got}")
    return CopyResult(got, data, config, mt)


def _read_small(src: Source, desc: Descriptor) -> bytes:
    buf = io.BytesIO()
    src.write_blob(desc, buf)
    return buf.getvalue()


@contextlib.contextmanager
def closing(obj: Source) -> Any:
    try:
        yield obj
    finally:
        obj.close()
