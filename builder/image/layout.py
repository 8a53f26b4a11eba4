"""OCI image layouts (image-spec image-layout.md): a directory with
``oci-layout``, ``index.json`` and ``blobs/<alg>/<hex>``, and the same as a tar
(``oci-archive``). Writes are atomic: blobs via temp+rename, index.json last."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import BinaryIO, Iterator

from builder.errors import DigestMismatch, FormatError, ImageNotFound
from builder.image.atomic import atomic_file, write_atomic
from builder.image.oci import ANNOTATION_REF_NAME, OCI_INDEX, Descriptor, Index, check_digest_syntax, parse_index
from builder.image.store import VerifiedReader

LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}


class OCILayout:
    """One layout directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return (self.path / "oci-layout").is_file()

    def blob_path(self, digest: str) -> Path:
        algo, hexd = check_digest_syntax(digest).split(":", 1)
        return self.path / "blobs" / algo / hexd

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def open_blob(self, desc: Descriptor) -> VerifiedReader:
        try:
            fh = open(self.blob_path(desc.digest), "rb")
        except FileNotFoundError:
            raise FormatError(f"oci:{self.path}: blob {desc.digest} is missing") from None
        return VerifiedReader(fh, desc.digest, desc.size, f"oci:{self.path}: blob {desc.digest}")

    def read_blob(self, desc: Descriptor) -> bytes:
        with self.open_blob(desc) as r:
            return r.read()

    # --- writing ---
    def init(self) -> None:
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if not (self.path / "oci-layout").exists():
            write_atomic(self.path / "oci-layout", json.dumps(LAYOUT_FILE).encode())
        if not (self.path / "index.json").exists():
            write_atomic(self.path / "index.json", Index(()).to_bytes())

    @contextlib.contextmanager
    def blob_writer(self, desc: Descriptor) -> Iterator[BinaryIO]:
        """A file to write ``desc``'s bytes into; verified and renamed into place on success."""
        h = hashlib.new(desc.digest.split(":", 1)[0])
        with atomic_file(self.blob_path(desc.digest)) as raw:
            w = _HashingFile(raw, h)
            yield w  # type: ignore[misc]
            got = f"{h.name}:{h.hexdigest()}"
            if got != desc.digest or (desc.size and w.size != desc.size):
                raise DigestMismatch(f"oci:{self.path}: blob {desc.digest}: content has digest {got}")

    def put_bytes(self, data: bytes, media_type: str) -> Descriptor:
        from builder.image.oci import sha256_digest
        desc = Descriptor(media_type, sha256_digest(data), len(data))
        if not self.has_blob(desc.digest):
            with self.blob_writer(desc) as w:
                w.write(data)
        return desc

    def index(self) -> Index:
        try:
            return parse_index((self.path / "index.json").read_bytes(), f"oci:{self.path}: index.json")
        except FileNotFoundError:
            raise ImageNotFound(f"oci:{self.path}: not an OCI layout (no index.json)") from None

    def add_manifest(self, desc: Descriptor, ref: str | None) -> None:
        """Point ``ref`` at ``desc`` in index.json (replacing an entry with the same ref)."""
        idx = self.index()
        keep = [m for m in idx.manifests
                if not (ref and m.annotations.get(ANNOTATION_REF_NAME) == ref) and not (not ref and m.digest == desc.digest)]
        if ref:
            desc = desc.with_annotations(**{ANNOTATION_REF_NAME: ref})
        new = Index(tuple(keep) + (desc,), OCI_INDEX, idx.annotations)
        write_atomic(self.path / "index.json", new.to_bytes())

    # --- reading ---
    def resolve(self, ref: str | None) -> Descriptor:
        """The descriptor named ``ref`` (or the only one when no ref is given)."""
        idx = self.index()
        if ref:
            hits = [m for m in idx.manifests if m.annotations.get(ANNOTATION_REF_NAME) == ref]
            if not hits and ref.startswith("sha256:"):
                hits = [m for m in idx.manifests if m.digest == ref]
            if not hits:
                names = ", ".join(m.annotations.get(ANNOTATION_REF_NAME, m.digest[:19]) for m in idx.manifests)
                raise ImageNotFound(f"oci:{self.path}:{ref}: no such reference (has: {names or 'nothing'})")
            return hits[-1]
        if len(idx.manifests) != 1:
            raise ImageNotFound(f"oci:{self.path}: {len(idx.manifests)} images in the layout: name one with :REF")
        return idx.manifests[0]


class _HashingFile:
    def __init__(self, raw: BinaryIO, h: "hashlib._Hash") -> None:
        self.raw, self.h, self.size = raw, h, 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.size += len(data)
        return self.raw.write(data)


def extract_archive(archive: Path, into: Path) -> OCILayout:
    """Unpack an oci-archive into ``into`` (only regular files and dirs under blobs/, index.json, oci-layout)."""
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115
    except (OSError, tarfile.TarError) as exc:
        raise FormatError(f"oci-archive:{archive}: cannot read: {exc}") from None
    with tf:
        for m in tf:
            name = os.path.normpath(m.name).lstrip("/")
            if name.startswith("..") or not (name in ("index.json", "oci-layout") or name.startswith("blobs/")):
                continue
            if m.isdir():
                (into / name).mkdir(parents=True, exist_ok=True)
            elif m.isreg():
                (into / name).parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                assert src is not None
                with open(into / name, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    layout = OCILayout(into)
    if not (into / "index.json").exists():
        raise FormatError(f"oci-archive:{archive}: no index.json inside")
    return layout


def write_archive(layout: OCILayout, archive: Path) -> None:
    """Tar a layout into ``archive`` atomically (deterministic member order)."""
    with atomic_file(archive) as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in ("oci-layout", "index.json"):
            _add(tf, layout.path / name, name)
        for p in sorted((layout.path / "blobs").rglob("*")):
            rel = p.relative_to(layout.path).as_posix()
            if p.is_dir() or p.is_file() and not p.name.startswith(".tmp-"):
                _add(tf, p, rel)


def _add(tf: tarfile.TarFile, path: Path, name: str) -> None:
    ti = tf.gettarinfo(str(path), arcname=name)
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mtime = 0
    if ti.isreg():
        with open(path, "rb") as fh:
            tf.addfile(ti, fh)
    else:
        tf.addfile(ti)
