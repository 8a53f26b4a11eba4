"""Image locations named as skopeo and buildah name them, and a source and a
destination for each:

    docker://HOST/REPO[:TAG|@DIGEST]   a registry
    oci:DIR[:REF]                      an OCI layout directory
    oci-archive:FILE[:REF]             a tar of an OCI layout
    docker-archive:FILE[:NAME:TAG]     a `docker save` archive (source: also :@INDEX)
    docker-daemon:NAME[:TAG]           a Docker engine ($DOCKER_HOST; source: also :sha256:ID)
    NAME or ID                         the local store (``containers-storage:`` accepted)
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Sequence

from builder.errors import FormatError, ImageNotFound, RegistryError, UsageError
from builder.image import sign
from builder.image.compress import decompress_reader
from builder.image.dockerarchive import DockerArchiveReader, DockerArchiveWriter
from builder.image.dockerdaemon import Engine
from builder.image.imagenames import lookup_candidates, split_tag, store_name
from builder.image.layout import OCILayout, extract_archive, write_archive
from builder.image.oci import (DOCKER_MANIFEST, INDEX_TYPES, Descriptor, Platform, detect_media_type, parse_index,
                               parse_manifest, sha256_digest)
from builder.image.reference import check_not_blocked, parse_reference, pull_sources
from builder.image.registry.client import RegistryClient
from builder.image.registry.options import RegistryOptions
from builder.image.store import VerifiedReader

if TYPE_CHECKING:
    from builder.image.reference import ImageReference
    from builder.image.registry.client import RegistryClient
    from builder.image.registry.options import RegistryOptions
    from builder.image.store import ImageRecord, Store
    from builder.progress import Progress

KINDS = ("docker", "oci", "oci-archive", "docker-archive", "docker-daemon", "store")


@dataclass(frozen=True)
class Location:
    kind: str
    path: str = ""  # file or directory for layouts and archives; the name for the store
    ref: str | None = None  # oci ref, docker-archive NAME:TAG or @N
    reference: "ImageReference | None" = None  # registry reference

    def __str__(self) -> str:
        if self.kind == "docker":
            return f"docker://{self.reference}"
        if self.kind == "store":
            return self.path
        if self.kind == "docker-daemon":
            return f"docker-daemon:{self.path}"
        return f"{self.kind}:{self.path}" + (f":{self.ref}" if self.ref else "")


def parse_location(text: str) -> Location:
    """UsageError for an unknown transport, naming the text."""
    if text.startswith("docker://"):
        return Location("docker", reference=parse_reference(text[len("docker://"):]))
    for kind in ("oci-archive", "docker-archive", "oci"):
        if text.startswith(kind + ":"):
            rest = text[len(kind) + 1:]
            if not rest:
                raise UsageError(f"invalid image location {text!r}: no path")
            path, ref = _split_path_ref(rest, kind)
            return Location(kind, path, ref)
    if text.startswith("containers-storage:"):
        return Location("store", text[len("containers-storage:"):])
    if text.startswith("docker-daemon:"):
        return _daemon_location(text)
    prefix = text.split(":", 1)[0]
    if ":" in text and "/" not in prefix and "." not in prefix and prefix.isalpha() and \
            prefix in ("dir", "ostree", "sif", "tarball"):
        raise UsageError(f"invalid image location {text!r}: transport {prefix!r} is not supported "
                         "(docker://, oci:, oci-archive:, docker-archive:, docker-daemon:, or a local name)")
    return Location("store", text)


def _daemon_location(text: str) -> Location:
    """docker-daemon:NAME[:TAG] (normalised as Docker names it; :latest when untagged) or
    docker-daemon:sha256:ID (an image id; sources only)."""
    rest = text[len("docker-daemon:"):]
    if not rest:
        raise UsageError(f"invalid image location {text!r}: no image name")
    if re.fullmatch(r"sha256:[0-9a-f]{64}", rest):
        return Location("docker-daemon", rest)
    ref = parse_reference(rest)
    if ref.digest:
        raise UsageError(f"invalid image location {text!r}: the Docker engine takes NAME:TAG or an image id")
    return Location("docker-daemon", ref.name, reference=ref)


def _split_path_ref(rest: str, kind: str) -> tuple[str, str | None]:
    if kind == "docker-archive":
        path, sep, ref = rest.partition(":")
        return path, ref or None
    path, sep, ref = rest.partition(":")
    return path, ref or None


# --- sources ---------------------------------------------------------------------------
class Source:
    """Where an image is read from. Blobs come back verified."""

    name: str

    def raw_manifest(self) -> tuple[bytes, str]:
        raise NotImplementedError

    def manifest_by_digest(self, desc: Descriptor) -> bytes:
        raise NotImplementedError

    def write_blob(self, desc: Descriptor, sink: Any) -> None:
        """Stream ``desc``'s verified bytes into ``sink.write``."""
        raise NotImplementedError

    def open_at(self, desc: Descriptor, offset: int) -> BinaryIO:
        raise NotImplementedError

    def mount_from(self, registry: str, desc: Descriptor) -> Sequence[str]:
        """Repositories on ``registry`` known to hold ``desc`` (cross-repository mount candidates)."""
        return ()

    def close(self) -> None:
        pass

    def manifest(self, platform: Platform | None) -> tuple[bytes, str, str, str | None]:
        """(manifest bytes, media type, digest, index digest or None), choosing ``platform`` from an index."""
        data, mt = self.raw_manifest()
        mt = detect_media_type(data, mt, f"manifest of {self.name}")
        if mt in INDEX_TYPES:
            idx = parse_index(data, f"index of {self.name}")
            desc = idx.select(platform or Platform.host())
            inner = self.manifest_by_digest(desc)
            imt = detect_media_type(inner, desc.media_type, f"manifest of {self.name}")
            if imt in INDEX_TYPES:
                raise FormatError(f"{self.name}: nested index for {desc.platform} is not supported")
            return inner, imt, desc.digest, sha256_digest(data)
        return data, mt, sha256_digest(data), None


class _SpoolingSource(Source):
    """open_at for sources that can only stream: spool each blob once to a temp file."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self._spooled: dict[str, str] = {}

    def open_at(self, desc: Descriptor, offset: int) -> BinaryIO:
        path = self._spooled.get(desc.digest)
        if path is None:
            fd, path = tempfile.mkstemp(dir=self.tmp_dir, prefix="spool-")
            with os.fdopen(fd, "wb") as out:
                self.write_blob(desc, out)
            self._spooled[desc.digest] = path
        fh = open(path, "rb")  # noqa: SIM115
        fh.seek(offset)
        return fh

    def close(self) -> None:
        for p in self._spooled.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


class RegistrySource(_SpoolingSource):
    def __init__(self, client: "RegistryClient", ref: "ImageReference", tmp_dir: Path) -> None:
        super().__init__(tmp_dir)
        self.client, self.ref, self.name = client, ref, ref.name

    def raw_manifest(self) -> tuple[bytes, str]:
        data, mt, _ = self.client.get_manifest(self.ref.repository, self.ref.reference)
        return data, mt

    def manifest_by_digest(self, desc: Descriptor) -> bytes:
        return self.client.get_manifest(self.ref.repository, desc.digest)[0]

    def write_blob(self, desc: Descriptor, sink: Any) -> None:
        self.client.fetch_blob(self.ref.repository, desc, sink)

    def mount_from(self, registry: str, desc: Descriptor) -> Sequence[str]:
        return [self.ref.repository] if registry == self.ref.registry else []

    def close(self) -> None:
        super().close()
        self.client.close()


class MirroredRegistrySource(Source):
    """A registry image with registries.conf mirrors: the first pull source whose manifest
    answers serves the whole image (containers/image tries its PullSources the same way);
    when none does, the primary location's error is raised."""

    def __init__(self, candidates: list[tuple["RegistryClient", "ImageReference"]], name: str, tmp_dir: Path) -> None:
        self.candidates, self.name, self.tmp_dir = candidates, name, tmp_dir
        self.active: RegistrySource | None = None

    def raw_manifest(self) -> tuple[bytes, str]:
        last: BaseException | None = None
        for client, ref in self.candidates:
            src = RegistrySource(client, ref, self.tmp_dir)
            try:
                got = src.raw_manifest()
            except RegistryError as exc:
                logging.getLogger("bale").info("%s: pull source %s failed: %s", self.name, ref.name, exc)
                last = exc
                continue
            self.active = src
            return got
        assert last is not None
        raise last

    def _src(self) -> RegistrySource:
        if self.active is None:
            self.raw_manifest()
        assert self.active is not None
        return self.active

    def manifest_by_digest(self, desc: Descriptor) -> bytes:
        return self._src().manifest_by_digest(desc)

    def write_blob(self, desc: Descriptor, sink: Any) -> None:
        self._src().write_blob(desc, sink)

    def open_at(self, desc: Descriptor, offset: int) -> BinaryIO:
        return self._src().open_at(desc, offset)

    def mount_from(self, registry: str, desc: Descriptor) -> Sequence[str]:
        return self._src().mount_from(registry, desc)

    def close(self) -> None:
        if self.active is not None:
            self.active.close()
        for client, _ in self.candidates:
            client.close()


class _FileBlobSource(Source):
    """Sources whose blobs are files: read them verified, seek for open_at."""

    def _open(self, desc: Descriptor) -> BinaryIO:
        raise NotImplementedError

    def write_blob(self, desc: Descriptor, sink: Any) -> None:
        with self._open(desc) as r:
            while chunk := r.read(1 << 20):
                sink.write(chunk)

    def open_at(self, desc: Descriptor, offset: int) -> BinaryIO:
        r = self._open(desc)
        raw = getattr(r, "raw", r)
        raw.seek(offset)  # the peer (registry digest check, DockerArchiveWriter) verifies what it reads
        return raw


class StoreSource(_FileBlobSource):
    def __init__(self, store: "Store", rec: "ImageRecord") -> None:
        self.store, self.rec = store, rec
        self.name = rec.names[0] if rec.names else rec.id

    def raw_manifest(self) -> tuple[bytes, str]:
        return self.store.read_blob(self.rec.manifest_digest), self.rec.manifest_media_type

    def manifest_by_digest(self, desc: Descriptor) -> bytes:
        return self.store.read_blob(desc.digest)

    def _open(self, desc: Descriptor) -> BinaryIO:
        return self.store.open_blob(desc.digest, f"blob {desc.digest} of {self.name}")  # type: ignore[return-value]

    def mount_from(self, registry: str, desc: Descriptor) -> Sequence[str]:
        return [r.split("/", 1)[1] for r in self.store.blob_sources(desc.digest) if r.startswith(registry + "/")]


class LayoutSource(_FileBlobSource):
    def __init__(self, layout_path: Path, ref: str | None, name: str, cleanup: Path | None = None) -> None:
        self.layout, self.ref, self.name, self._cleanup = OCILayout(layout_path), ref, name, cleanup
        if not self.layout.exists() and not (layout_path / "index.json").exists():
            raise FormatError(f"{name}: not an OCI layout")

    def raw_manifest(self) -> tuple[bytes, str]:
        desc = self.layout.resolve(self.ref)
        return self.layout.read_blob(desc), desc.media_type

    def manifest_by_digest(self, desc: Descriptor) -> bytes:
        return self.layout.read_blob(desc)

    def _open(self, desc: Descriptor) -> BinaryIO:
        return self.layout.open_blob(desc)  # type: ignore[return-value]

    def close(self) -> None:
        if self._cleanup:
            shutil.rmtree(self._cleanup, ignore_errors=True)


class DockerArchiveSource(_SpoolingSource):
    def __init__(self, path: Path, selector: str | None, tmp_dir: Path) -> None:
        super().__init__(tmp_dir)
        self.name = f"docker-archive:{path}"
        self.reader = DockerArchiveReader(path, selector)
        self.repo_tags = list(self.reader.image.repo_tags)
        self._bytes, self.members = self.reader.manifest()

    def raw_manifest(self) -> tuple[bytes, str]:
        return self._bytes, DOCKER_MANIFEST

    def manifest_by_digest(self, desc: Descriptor) -> bytes:
        raise FormatError(f"{self.name}: has no index")

    def write_blob(self, desc: Descriptor, sink: Any) -> None:
        member = self.members.get(desc.digest)
        if member is None:
            raise FormatError(f"{self.name}: no blob {desc.digest}")
        with VerifiedReader(self.reader.open_member(member), desc.digest, desc.size, f"{self.name}: {member}") as r:
            while chunk := r.read(1 << 20):
                sink.write(chunk)

    def close(self) -> None:
        super().close()
        self.reader.close()


class DockerDaemonSource(DockerArchiveSource):
    """An image saved by a Docker engine (GET /images/NAME/get), read as a docker-archive."""

    def __init__(self, loc: Location, tmp_dir: Path) -> None:
        fd, path = tempfile.mkstemp(dir=tmp_dir, prefix="docker-daemon-")
        self._archive = Path(path)
        try:
            with os.fdopen(fd, "wb") as fh:
                Engine().save(loc.path, fh, str(loc))
            super().__init__(self._archive, None, tmp_dir)
        except BaseException:
            self._archive.unlink(missing_ok=True)
            raise
        self.name = str(loc)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._archive.unlink(missing_ok=True)


def open_source(loc: Location, *, store: "Store", registry: "RegistryOptions | None" = None,
                progress: "Progress | None" = None) -> Source:
    if loc.kind == "docker":
        assert loc.reference is not None
        opts = registry or RegistryOptions()
        sources = pull_sources(loc.reference)  # registries.conf: mirrors, location rewrite, blocked
        if len(sources) == 1 and sources[0].reference == loc.reference:
            return RegistrySource(RegistryClient(loc.reference.registry, opts, progress), loc.reference, store.tmp_dir)
        cands = []
        for ps in sources:
            o = replace(opts, tls_verify=False) if ps.insecure and opts.tls_verify is None else opts
            cands.append((RegistryClient(ps.reference.registry, o, progress), ps.reference))
        return MirroredRegistrySource(cands, loc.reference.name, store.tmp_dir)
    if loc.kind == "oci":
        return LayoutSource(Path(loc.path), loc.ref, str(loc))
    if loc.kind == "oci-archive":
        if not os.path.isfile(loc.path):
            raise UsageError(f"{loc}: no such file")
        tmp = Path(tempfile.mkdtemp(dir=store.tmp_dir, prefix="oci-archive-"))
        try:
            extract_archive(Path(loc.path), tmp)
            return LayoutSource(tmp, loc.ref, str(loc), cleanup=tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if loc.kind == "docker-archive":
        if not os.path.isfile(loc.path):
            raise UsageError(f"{loc}: no such file")
        return DockerArchiveSource(Path(loc.path), loc.ref, store.tmp_dir)
    if loc.kind == "docker-daemon":
        return DockerDaemonSource(loc, store.tmp_dir)
    for cand in lookup_candidates(loc.path):
        rec = store.find_image(cand)
        if rec is not None:
            return StoreSource(store, rec)
    raise ImageNotFound(f"image {loc.path}: not known in the local store")


# --- destinations ---------------------------------------------------------------------
class Destination:
    name: str
    #: docker-archive needs Docker media types and uncompressed layers
    requires_docker = False
    #: OCI layouts hold OCI media types only (containers/image ignores others)
    requires_oci = False
    uncompressed_layers = False
    registry_host: str | None = None

    def has_blob(self, desc: Descriptor) -> bool:
        return False

    def put_blob(self, desc: Descriptor, src: Source) -> str:
        raise NotImplementedError

    def put_manifest(self, data: bytes, media_type: str, config: bytes, diff_ids: list[str]) -> str:
        """Write the manifest (after every blob); returns its digest."""
        raise NotImplementedError

    def abort(self) -> None:
        pass


class RegistryDestination(Destination):
    def __init__(self, client: "RegistryClient", ref: "ImageReference") -> None:
        self.client, self.ref, self.name = client, ref, ref.name
        self.registry_host = ref.registry

    def has_blob(self, desc: Descriptor) -> bool:
        return False  # push_blob's own HEAD decides (and reports "exists")

    def put_blob(self, desc: Descriptor, src: Source) -> str:
        result = self.client.push_blob(self.ref.repository, desc, lambda off: src.open_at(desc, off),
                                       src.mount_from(self.ref.registry, desc))
        store = getattr(src, "store", None)
        if store is not None:
            store.note_source(desc.digest, self.ref.repo_name)
        return result

    def put_manifest(self, data: bytes, media_type: str, config: bytes, diff_ids: list[str]) -> str:
        """Push the manifest; with ``sign_by_sigstore_key`` also its cosign signature (``sha256-HEX.sig``)."""
        ref = self.ref.digest or self.ref.tag or "latest"
        digest = self.client.put_manifest(self.ref.repository, ref, data, media_type)
        opts = self.client.options
        if opts.sign_by_sigstore_key:
            key = sign.load_private_key(opts.sign_by_sigstore_key, opts.sign_passphrase)
            sign.sign_image(self.client, self.ref.repository, self.ref.repo_name, digest, key)
        return digest


class StoreDestination(Destination):
    def __init__(self, store: "Store", names: list[str]) -> None:
        self.store, self.names, self.name = store, names, names[0] if names else "the local store"
        self.record: "ImageRecord | None" = None
        self.index_digest: str | None = None

    def has_blob(self, desc: Descriptor) -> bool:
        return self.store.has_blob(desc.digest)

    def put_blob(self, desc: Descriptor, src: Source) -> str:
        with self.store.writer(desc.digest, desc.size) as w:
            src.write_blob(desc, w)
            w.commit()
        repo = getattr(getattr(src, "ref", None), "repo_name", None)
        if repo:
            self.store.note_source(desc.digest, repo)
        return "stored"

    def put_manifest(self, data: bytes, media_type: str, config: bytes, diff_ids: list[str]) -> str:
        digest = self.store.put_bytes(data)
        man = parse_manifest(data)
        if len(diff_ids) == len(man.layers):
            for d, diff in zip(man.layers, diff_ids):
                self.store.set_diff_id(diff, d)
        self.record = self.store.add_image(digest, self.names, self.index_digest)
        return digest


class LayoutDestination(Destination):
    requires_oci = True

    def __init__(self, path: Path, ref: str | None, name: str) -> None:
        self.layout, self.ref, self.name = OCILayout(path), ref, name
        self.layout.init()

    def has_blob(self, desc: Descriptor) -> bool:
        return self.layout.has_blob(desc.digest)

    def put_blob(self, desc: Descriptor, src: Source) -> str:
        with self.layout.blob_writer(desc) as w:
            src.write_blob(desc, w)
        return "stored"

    def put_manifest(self, data: bytes, media_type: str, config: bytes, diff_ids: list[str]) -> str:
        desc = self.layout.put_bytes(data, media_type)
        self.layout.add_manifest(desc, self.ref)
        return desc.digest


class OCIArchiveDestination(LayoutDestination):
    def __init__(self, archive: Path, ref: str | None, tmp_dir: Path) -> None:
        self.archive = archive
        self.tmp = Path(tempfile.mkdtemp(dir=tmp_dir, prefix="oci-archive-out-"))
        if archive.is_file():  # add to an existing archive, as skopeo does
            extract_archive(archive, self.tmp)
        super().__init__(self.tmp, ref, f"oci-archive:{archive}")

    def put_manifest(self, data: bytes, media_type: str, config: bytes, diff_ids: list[str]) -> str:
        digest = super().put_manifest(data, media_type, config, diff_ids)
        try:
            write_archive(self.layout, self.archive)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return digest

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class DockerArchiveDestination(Destination):
    requires_docker = True
    uncompressed_layers = True

    def __init__(self, path: Path, repo_tags: list[str]) -> None:
        self.writer = DockerArchiveWriter(path)
        self.repo_tags, self.name = repo_tags, f"docker-archive:{path}"
        self.layer_names: dict[str, str] = {}
        self.blobs: dict[str, Source] = {}

    def put_blob(self, desc: Descriptor, src: Source) -> str:
        self.blobs[desc.digest] = src  # written in layer order by put_manifest
        return "queued"

    def put_manifest(self, data: bytes, media_type: str, config: bytes, diff_ids: list[str]) -> str:
        man = parse_manifest(data)
        names = []
        for d, diff in zip(man.layers, diff_ids):
            src = self.blobs[d.digest]
            with src.open_at(d, 0) as raw:
                names.append(self.writer.add_layer(diff, decompress_reader(raw, d.media_type)))
        self.writer.finish(config, names, self.repo_tags)
        return sha256_digest(data)

    def abort(self) -> None:
        self.writer.abort()


class DockerDaemonDestination(DockerArchiveDestination):
    """A docker-archive written to a temp file, then loaded by the engine (POST /images/load)."""

    def __init__(self, loc: Location, tmp_dir: Path) -> None:
        if loc.reference is None:
            raise UsageError(f"{loc}: name the image as NAME:TAG (an image id cannot be written)")
        self._archive = Path(tempfile.mkdtemp(dir=tmp_dir, prefix="docker-daemon-")) / "image.tar"
        super().__init__(self._archive, [loc.reference.name])
        self.name, self.loc = str(loc), loc

    def put_manifest(self, data: bytes, media_type: str, config: bytes, diff_ids: list[str]) -> str:
        try:
            digest = super().put_manifest(data, media_type, config, diff_ids)
            Engine().load(str(self._archive), self.name)
            return digest
        finally:
            shutil.rmtree(self._archive.parent, ignore_errors=True)

    def abort(self) -> None:
        super().abort()
        shutil.rmtree(self._archive.parent, ignore_errors=True)


def open_destination(loc: Location, *, store: "Store", registry: "RegistryOptions | None" = None,
                     progress: "Progress | None" = None, names: list[str] | None = None) -> Destination:
    if loc.kind == "docker":
        assert loc.reference is not None
        check_not_blocked(loc.reference.name)
        return RegistryDestination(RegistryClient(loc.reference.registry, registry or RegistryOptions(), progress),
                                   loc.reference)
    if loc.kind == "oci":
        return LayoutDestination(Path(loc.path), loc.ref, str(loc))
    if loc.kind == "oci-archive":
        return OCIArchiveDestination(Path(loc.path), loc.ref, store.tmp_dir)
    if loc.kind == "docker-archive":
        tags = [loc.ref] if loc.ref and not loc.ref.startswith("@") else list(names or [])
        return DockerArchiveDestination(Path(loc.path), [_docker_tag(t) for t in tags])
    if loc.kind == "docker-daemon":
        return DockerDaemonDestination(loc, store.tmp_dir)
    return StoreDestination(store, [store_name(loc.path)] if loc.path else list(names or []))


def _docker_tag(name: str) -> str:
    repo, tag, _ = split_tag(name)
    return f"{repo}:{tag or 'latest'}"


OpenAt = Callable[[int], BinaryIO]
