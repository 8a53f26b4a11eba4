"""`docker save` archives (docker-archive:): manifest.json, the config as
``<hex>.json``, uncompressed layer tars as ``<diff_id hex>.tar`` (as skopeo
writes them), and the legacy ``repositories`` file, so `docker load` and
`podman load` take them. Reading also accepts gzip layers and Docker 25's
OCI-style ``blobs/sha256/`` members."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from builder.errors import FormatError, ImageNotFound
from builder.image.oci import DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, DOCKER_MANIFEST, Descriptor, Manifest


@dataclass
class ArchiveImage:
    config_member: str
    layer_members: list[str]
    repo_tags: list[str]


class DockerArchiveReader:
    """Random access to one image of a docker-archive (the tar is read, never extracted)."""

    def __init__(self, path: Path, selector: str | None) -> None:
        self.path = path
        try:
            self.tar = tarfile.open(path, "r:")  # noqa: SIM115
        except (OSError, tarfile.TarError) as exc:
            raise FormatError(f"docker-archive:{path}: cannot read: {exc}") from None
        try:
            raw = self._member_bytes("manifest.json")
            entries = json.loads(raw)
        except (KeyError, ValueError) as exc:
            raise FormatError(f"docker-archive:{path}: missing or malformed manifest.json ({exc})") from None
        if not isinstance(entries, list) or not entries:
            raise FormatError(f"docker-archive:{path}: manifest.json lists no image")
        self.image = self._select(entries, selector)
        self._digests: dict[str, tuple[str, int, str]] = {}

    def _select(self, entries: list[dict[str, Any]], selector: str | None) -> ArchiveImage:
        pick = None
        if selector is None:
            if len(entries) > 1:
                raise ImageNotFound(f"docker-archive:{self.path}: {len(entries)} images: name one (:NAME:TAG or :@N)")
            pick = entries[0]
        elif selector.startswith("@"):
            try:
                pick = entries[int(selector[1:])]
            except (ValueError, IndexError):
                raise ImageNotFound(f"docker-archive:{self.path}: no image {selector}") from None
        else:
            for e in entries:
                tags = e.get("RepoTags") or []
                if selector in tags or any(t.endswith("/" + selector) for t in tags):
                    pick = e
            if pick is None:
                raise ImageNotFound(f"docker-archive:{self.path}: no image named {selector}")
        return ArchiveImage(pick["Config"], list(pick["Layers"]), list(pick.get("RepoTags") or []))

    def _member_bytes(self, name: str) -> bytes:
        f = self.tar.extractfile(name)
        if f is None:
            raise KeyError(name)
        return f.read()

    def open_member(self, name: str) -> BinaryIO:
        try:
            f = self.tar.extractfile(name)
        except KeyError:
            raise FormatError(f"docker-archive:{self.path}: member {name} is missing") from None
        if f is None:
            raise FormatError(f"docker-archive:{self.path}: member {name} is not a file")
        return f  # type: ignore[return-value]

    def _describe(self, name: str) -> tuple[str, int, str]:
        """(digest, size, media type) of a member, hashed once."""
        if name not in self._digests:
            h, size = hashlib.sha256(), 0
            with self.open_member(name) as f:
                head = f.read(2)
                h.update(head)
                size += len(head)
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    size += len(chunk)
            mt = DOCKER_LAYER_GZIP if head == b"\x1f\x8b" else DOCKER_LAYER_TAR
            self._digests[name] = ("sha256:" + h.hexdigest(), size, mt)
        return self._digests[name]

    def manifest(self) -> tuple[bytes, dict[str, str]]:
        """A Docker schema2 manifest for the image, and digest -> member name."""
        config = self._member_bytes(self.image.config_member)
        cdig = "sha256:" + hashlib.sha256(config).hexdigest()
        members = {cdig: self.image.config_member}
        layers = []
        for name in self.image.layer_members:
            d, size, mt = self._describe(name)
            members[d] = name
            layers.append(Descriptor(mt, d, size))
        man = Manifest(Descriptor(DOCKER_CONFIG, cdig, len(config)), tuple(layers), DOCKER_MANIFEST)
        return man.to_bytes(), members

    def close(self) -> None:
        self.tar.close()


class DockerArchiveWriter:
    """Builds a docker-archive: layers are added uncompressed (spooled to learn their size)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        self.fh = os.fdopen(fd, "wb")
        self.tar = tarfile.open(fileobj=self.fh, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.written: set[str] = set()

    def _add(self, name: str, src: BinaryIO, size: int) -> None:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = size, 0o644, 0
        self.tar.addfile(ti, src)
        self.written.add(name)

    def add_layer(self, diff_id: str, uncompressed: BinaryIO) -> str:
        name = diff_id.split(":", 1)[1] + ".tar"
        if name in self.written:
            return name
        with tempfile.TemporaryFile(dir=self.path.parent) as spool:
            h = hashlib.sha256()
            while chunk := uncompressed.read(1 << 20):
                h.update(chunk)
                spool.write(chunk)
            if "sha256:" + h.hexdigest() != diff_id:
                raise FormatError(f"docker-archive:{self.path}: layer content does not match diff_id {diff_id}")
            size = spool.tell()
            spool.seek(0)
            self._add(name, spool, size)  # type: ignore[arg-type]
        return name

    def finish(self, config: bytes, layer_names: list[str], repo_tags: list[str]) -> None:
        cname = hashlib.sha256(config).hexdigest() + ".json"
        self._add(cname, io.BytesIO(config), len(config))
        manifest = [{"Config": cname, "RepoTags": repo_tags, "Layers": layer_names}]
        data = json.dumps(manifest).encode()
        self._add("manifest.json", io.BytesIO(data), len(data))
        repos: dict[str, dict[str, str]] = {}
        top = layer_names[-1].split(".", 1)[0] if layer_names else ""
        for t in repo_tags:
            repo, _, tag = t.rpartition(":")
            repos.setdefault(repo, {})[tag] = top
        if repos:
            data = json.dumps(repos).encode()
            self._add("repositories", io.BytesIO(data), len(data))
        self.tar.close()
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.tar.close()
            self.fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)
