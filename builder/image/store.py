"""The local image store: content-addressed blobs plus image records.

Layout under ``root``::

    blobs/sha256/<hex>        every blob (manifests, configs, layers), verified on write
    images.json               image records (id, manifest digest, names), replaced atomically
    diffids/sha256/<hex>      JSON {"digest", "mediaType", "size"}: diff_id -> compressed blob
    tmp/<lease id>/           each process's temp files; same filesystem, so commit is a rename
    leases/<lease id>.lease   what each live process uses (builder.image.lease)
    lock                      flock: shared for readers, exclusive for writers (builder.image.storelock)

Contract (after umoci's cas.Engine and containerd's leases):
* ``put_*`` is idempotent and atomic: temp file, hash while writing, fsync, rename.
  A crash leaves at most a stray file in the dead process's tmp/<lease id>/, never a wrong blob.
* ``open_blob`` returns a reader that re-hashes and raises DigestMismatch at EOF.
* Image records change only under the exclusive lock, by rewriting images.json
  through a temp file and ``os.replace``.
* Every blob this process writes, finds with ``has_blob``, or reaches through ``manifest_of``
  is recorded in its lease first (under the shared lock), so no other process's ``gc`` removes
  it while this one lives.
* ``gc`` deletes blobs that no image record, ``keep`` or other live lease reaches, under the
  exclusive lock.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Collection

from builder.errors import DigestMismatch, ImageNotFound, StoreError
from builder.image.atomic import write_atomic
from builder.image.lease import Lease, current_lease_id, lease_for, read_leases
from builder.image.storelock import lock_for
from builder.image.oci import (INDEX_TYPES, Descriptor, check_digest_syntax, detect_media_type,
                         parse_config, parse_manifest, sha256_digest)

CHUNK = 1 << 20


def default_root() -> Path:
    """``$BALE_ROOT``, else storage.conf's ``graphroot``/bale (builder/image/storageconf.py),
    else /var/lib/bale for root, else ``$XDG_DATA_HOME/bale``."""
    env = os.environ.get("BALE_ROOT")
    if env:
        return Path(env)
    from builder.image.storageconf import storage_conf
    conf_root = storage_conf().bale_root
    if conf_root is not None:
        return conf_root
    if os.geteuid() == 0:
        return Path("/var/lib/bale")
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(xdg) / "bale"


@dataclass
class ImageRecord:
    """One image in the store. ``id`` is the config digest (as docker and buildah use)."""

    id: str
    manifest_digest: str
    manifest_media_type: str
    names: list[str] = field(default_factory=list)
    created: float = 0.0
    #: manifest-list/index digest this image was chosen from, if any (pull by index digest)
    index_digest: str | None = None

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "manifest_digest": self.manifest_digest,
                "manifest_media_type": self.manifest_media_type, "names": self.names,
                "created": self.created, "index_digest": self.index_digest}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ImageRecord":
        return cls(d["id"], d["manifest_digest"], d["manifest_media_type"], list(d.get("names", [])),
                   float(d.get("created", 0.0)), d.get("index_digest"))


class VerifiedReader:
    """Wraps a file; hashes what is read and raises DigestMismatch at EOF if it does not match."""

    def __init__(self, fh: BinaryIO, digest: str, size: int | None, what: str) -> None:
        self._fh, self._digest, self._size, self._what = fh, digest, size, what
        self._h = hashlib.new(digest.split(":", 1)[0])
        self._n = 0
        self._checked = False

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        if data:
            self._h.update(data)
            self._n += len(data)
        if not data or n < 0:
            self._check()
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def _check(self) -> None:
        if self._checked:
            return
        self._checked = True
        got = f"{self._digest.split(':', 1)[0]}:{self._h.hexdigest()}"
        if got != self._digest or (self._size is not None and self._n != self._size):
            raise DigestMismatch(f"{self._what}: digest mismatch: expected {self._digest}, got {got}")

    def readable(self) -> bool:
        return True

    @property
    def raw(self) -> BinaryIO:
        """The unverified file underneath (for seeking readers whose peer verifies the bytes)."""
        return self._fh

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "VerifiedReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobWriter:
    """Streams a blob into tmp/, hashing as it goes; ``commit()`` verifies and renames it into place."""

    def __init__(self, store: "Store", expected: str | None = None, expected_size: int | None = None) -> None:
        self._store = store
        self._expected, self._expected_size = expected, expected_size
        algo = expected.split(":", 1)[0] if expected else "sha256"
        self._h = hashlib.new(algo)
        self.size = 0
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="blob-")
        self._path = Path(name)
        self._fh: IO[bytes] | None = os.fdopen(fd, "wb")
        self.digest: str | None = None

    def write(self, data: bytes | memoryview) -> int:
        assert self._fh is not None
        self._h.update(data)
        self.size += len(data)
        return self._fh.write(data)

    def written(self) -> tuple[str, int]:
        """(digest, size) of the bytes written so far: writers that produce the blob
        (compress.LayerWriter) take it from here instead of hashing the stream again."""
        return f"{self._h.name}:{self._h.copy().hexdigest()}", self.size

    def commit(self) -> Descriptor:
        """Verify, fsync and rename. Returns a descriptor with media type ''."""
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        digest = f"{self._h.name}:{self._h.hexdigest()}"
        if self._expected and digest != self._expected:
            self.abort()
            raise DigestMismatch(f"blob {self._expected}: digest mismatch: got {digest}")
        if self._expected_size is not None and self.size != self._expected_size:
            self.abort()
            raise DigestMismatch(f"blob {self._expected}: size mismatch: expected {self._expected_size}, got {self.size}")
        dest = self._store.blob_path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self._path, 0o644)
        with self._store.lock(exclusive=False):
            self._store.lease.record("blob", digest)
            os.replace(self._path, dest)
        self.digest = digest
        return Descriptor("", digest, self.size)

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self._fh is not None:
            self.abort()


class Store:
    """The store at ``root`` (made if missing; StoreError if it cannot be). Any number of Store
    objects, threads and processes may share one root: they share its lock and lease."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        try:
            for sub in ("blobs/sha256", "diffids/sha256", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create store at {self.root}: {exc.strerror}") from None
        self._lock, self._lock_pid = lock_for(self.root / "lock"), os.getpid()

    # --- locking and leases ---
    def lock(self, exclusive: bool = True) -> contextlib.AbstractContextManager[None]:
        """The store's lock: exclusive (one holder in all threads and processes) or shared.
        Re-entrant per thread; an exclusive holder may take it shared; a shared holder may not
        take it exclusive (StoreError). See builder.image.storelock."""
        if self._lock_pid != os.getpid():  # a forked child has its own locks (storelock module doc)
            self._lock, self._lock_pid = lock_for(self.root / "lock"), os.getpid()
        return self._lock(exclusive)

    @property
    def lease(self) -> Lease:
        """This process's lease on the store (taken on first use)."""
        return lease_for(self.root)

    @property
    def tmp_dir(self) -> Path:
        """This process's temp directory, ``tmp/<lease id>``: removed once the process is gone."""
        path = self.root / "tmp" / self.lease.id
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
        return path

    # --- blobs ---
    def blob_path(self, digest: str) -> Path:
        algo, hexd = check_digest_syntax(digest).split(":", 1)
        return self.root / "blobs" / algo / hexd

    def has_blob(self, digest: str) -> bool:
        """Whether the blob is stored; a True answer also leases it to this process (a caller
        that found it may rely on it staying)."""
        with self.lock(exclusive=False):
            self.lease.record("blob", check_digest_syntax(digest))
            return self.blob_path(digest).exists()

    def claim(self, *digests: str) -> None:
        """Lease blobs to this process before using them (no check that they exist)."""
        with self.lock(exclusive=False):
            self.lease.record("blob", *(check_digest_syntax(d) for d in digests))

    def blob_size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is not in the store") from None

    def open_blob(self, digest: str, what: str | None = None) -> VerifiedReader:
        try:
            fh = open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is not in the store") from None
        return VerifiedReader(fh, digest, None, what or f"blob {digest}")

    def read_blob(self, digest: str, what: str | None = None) -> bytes:
        with self.open_blob(digest, what) as r:
            return r.read()

    def writer(self, expected: str | None = None, expected_size: int | None = None) -> BlobWriter:
        return BlobWriter(self, expected, expected_size)

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        digest = sha256_digest(data) if expected is None else expected
        if self.has_blob(digest):  # leased by the check: it stays
            return digest
        with self.writer(expected) as w:
            w.write(data)
            return w.commit().digest

    def put_stream(self, src: BinaryIO, expected: str | None = None, expected_size: int | None = None) -> Descriptor:
        with self.writer(expected, expected_size) as w:
            shutil.copyfileobj(src, w, CHUNK)
            return w.commit()

    # --- where blobs came from (for cross-repository mounts on push) ---
    def note_source(self, digest: str, repo: str) -> None:
        """Remember that ``repo`` ("host/path") holds blob ``digest``."""
        algo, hexd = check_digest_syntax(digest).split(":", 1)
        path = self.root / "sources" / algo / hexd
        known = self.blob_sources(digest)
        if repo not in known:
            self._write_json_atomic(path, (known + [repo])[-8:])

    def blob_sources(self, digest: str) -> list[str]:
        algo, hexd = check_digest_syntax(digest).split(":", 1)
        try:
            data = json.loads((self.root / "sources" / algo / hexd).read_text())
        except (FileNotFoundError, ValueError):
            return []
        return [str(r) for r in data] if isinstance(data, list) else []

    # --- diff_id mapping ---
    def set_diff_id(self, diff_id: str, blob: Descriptor) -> None:
        algo, hexd = check_digest_syntax(diff_id).split(":", 1)
        path = self.root / "diffids" / algo / hexd
        self._write_json_atomic(path, {"digest": blob.digest, "mediaType": blob.media_type, "size": blob.size})

    def blob_for_diff_id(self, diff_id: str, media_type: str | None = None) -> Descriptor | None:
        """A stored compressed blob whose uncompressed digest is ``diff_id`` (optionally of one media type)."""
        algo, hexd = check_digest_syntax(diff_id).split(":", 1)
        try:
            d = json.loads((self.root / "diffids" / algo / hexd).read_text())
        except (FileNotFoundError, ValueError):
            return None
        if not self.has_blob(d["digest"]) or (media_type and d["mediaType"] != media_type):
            return None
        return Descriptor(d["mediaType"], d["digest"], int(d["size"]))

    # --- image records ---
    def _images_path(self) -> Path:
        return self.root / "images.json"

    def images(self) -> list[ImageRecord]:
        try:
            data = json.loads(self._images_path().read_text())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise StoreError(f"corrupt image list {self._images_path()}: {exc}") from None
        return [ImageRecord.from_json(d) for d in data.get("images", [])]

    def _save_images(self, records: list[ImageRecord]) -> None:
        self._write_json_atomic(self._images_path(), {"images": [r.to_json() for r in records]})

    def find_image(self, name_or_id: str) -> ImageRecord | None:
        """Look up by full name, id, ``sha256:`` id prefix, bare id prefix (>=3 hex), or manifest digest."""
        records = self.images()
        for r in records:
            if name_or_id in r.names:
                return r
        key = name_or_id.removeprefix("sha256:")
        if len(key) >= 3 and all(c in "0123456789abcdef" for c in key):
            hits = [r for r in records if r.id.split(":", 1)[1].startswith(key)
                    or r.manifest_digest.split(":", 1)[1] == key]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise StoreError(f"image id prefix {name_or_id!r} is ambiguous")
        return None

    def get_image(self, name_or_id: str) -> ImageRecord:
        r = self.find_image(name_or_id)
        if r is None:
            raise ImageNotFound(f"image {name_or_id}: not known in the local store")
        return r

    def add_image(self, manifest_digest: str, names: list[str] = (), index_digest: str | None = None) -> ImageRecord:  # type: ignore[assignment]
        """Record an image whose manifest, config and layer blobs are all in the store already.
        The names move to this image from any other that had them."""
        with self.lock():
            data = self.read_blob(manifest_digest, f"manifest {manifest_digest}")
            mt = detect_media_type(data, None, f"manifest {manifest_digest}")
            if mt in INDEX_TYPES:
                raise StoreError(f"manifest {manifest_digest} is an index, not an image")
            man = parse_manifest(data, f"manifest {manifest_digest}")
            for d in (man.config, *man.layers):
                if not self.has_blob(d.digest):
                    raise StoreError(f"image {manifest_digest}: blob {d.digest} missing from the store")
            parse_config(self.read_blob(man.config.digest, f"config {man.config.digest}"))
            records = self.images()
            names = list(dict.fromkeys(names))
            for r in records:
                r.names = [n for n in r.names if n not in names]
            rec = next((r for r in records if r.manifest_digest == manifest_digest), None)
            if rec is None:
                rec = ImageRecord(man.config.digest, manifest_digest, mt, [], time.time(), index_digest)
                records.append(rec)
            rec.names = list(dict.fromkeys(rec.names + names))
            if index_digest:
                rec.index_digest = index_digest
            self._save_images(records)
            return rec

    def tag(self, name_or_id: str, *names: str) -> ImageRecord:
        with self.lock():
            rec = self.get_image(name_or_id)
            return self.add_image(rec.manifest_digest, list(names))

    def untag(self, name: str) -> None:
        with self.lock():
            records = self.images()
            for r in records:
                if name in r.names:
                    r.names.remove(name)
            self._save_images(records)

    def remove_image(self, rec: ImageRecord) -> None:
        """Drop the record (blobs go at the next ``gc``)."""
        with self.lock():
            self._save_images([r for r in self.images() if r.manifest_digest != rec.manifest_digest])

    def manifest_of(self, rec: ImageRecord) -> tuple[bytes, Any]:
        """The image's manifest (bytes, parsed). Its manifest, config and layer blobs are leased to
        this process first, so the image's content stays while this process works from it even
        if another process removes the image."""
        with self.lock(exclusive=False):
            self.claim(rec.manifest_digest)
            data = self.read_blob(rec.manifest_digest, f"manifest of {rec.names[0] if rec.names else rec.id}")
            man = parse_manifest(data)
            self.claim(man.config.digest, *(l.digest for l in man.layers))
        return data, man

    # --- garbage collection ---
    def gc(self, keep: Collection[str] = frozenset()) -> list[str]:
        """Delete blobs that no image record, ``keep`` or live lease of another process reaches,
        and the diff_id and source notes of blobs gone. Returns the removed digests.
        (This process's own lease protects nothing here: it is the one collecting.)
        Stale leases and temp files are left to builder.workspace.gc, which knows snapshots."""
        return [d for d, _ in self.gc_sized(keep)]

    def gc_sized(self, keep: Collection[str] = frozenset()) -> list[tuple[str, int]]:
        """``gc``, with the size in bytes of each removed blob."""
        with self.lock():
            live = set(keep)
            for info in read_leases(self.root / "leases", own=current_lease_id(self.root)):
                if info.live:
                    live |= info.get("blob")
            from builder.image.manifestlist import live_digests
            live |= live_digests(self)  # manifest lists keep their index and every instance's blobs
            for r in self.images():
                live.add(r.manifest_digest)
                if r.index_digest:
                    live.add(r.index_digest)
                try:
                    man = parse_manifest(self.read_blob(r.manifest_digest))
                except Exception:  # a corrupt record keeps what it names; report elsewhere
                    continue
                live.add(man.config.digest)
                live.update(l.digest for l in man.layers)
            removed: list[tuple[str, int]] = []
            for p in (self.root / "blobs" / "sha256").iterdir():
                d = "sha256:" + p.name
                if d not in live:
                    size = p.lstat().st_size
                    p.unlink()
                    removed.append((d, size))
            for p in (self.root / "diffids" / "sha256").iterdir():
                try:
                    if not self.blob_path(json.loads(p.read_text())["digest"]).exists():
                        p.unlink()
                except (ValueError, KeyError, TypeError):
                    p.unlink()
            for p in (self.root / "sources" / "sha256").glob("*"):
                if not self.blob_path("sha256:" + p.name).exists():
                    p.unlink(missing_ok=True)
            return removed

    # --- helpers ---
    def _write_json_atomic(self, path: Path, obj: Any) -> None:
        write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode(), tmp_dir=self.tmp_dir, prefix="json-")
