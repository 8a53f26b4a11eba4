"""OCI image-spec objects (descriptor, manifest, index, config) and their Docker
schema2 equivalents, with parsing that validates and JSON that is canonical.

Objects are plain dataclasses; ``to_json()`` gives the dict that is serialised,
``parse_*`` functions accept OCI and Docker media types alike.
"""
from __future__ import annotations

import hashlib
import json
import platform as _platform
import re
from dataclasses import dataclass, field, replace
from typing import Any

from builder.errors import DigestMismatch, FormatError

# --- media types (image-spec media-types.md, Docker image-manifest-v2-2) ---
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
LAYER_TYPES = (
    OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_LAYER_ND_GZIP,
    DOCKER_LAYER_GZIP, DOCKER_LAYER_ZSTD, DOCKER_LAYER_FOREIGN, DOCKER_LAYER_TAR,
)
#: Accept header for manifest GETs: everything we can read.
MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"

_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


# --- digests ---
def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest_syntax(digest: str) -> str:
    if not _DIGEST_RE.match(digest):
        raise FormatError(f"invalid digest {digest!r}")
    return digest


def new_hasher(digest: str) -> "hashlib._Hash":
    """A hashlib object for the algorithm that ``digest`` names."""
    algo = check_digest_syntax(digest).split(":", 1)[0]
    return hashlib.new(algo)


def verify_bytes(data: bytes, digest: str, what: str) -> bytes:
    """Return ``data`` if it hashes to ``digest``; raise DigestMismatch naming ``what`` otherwise."""
    h = new_hasher(digest)
    h.update(data)
    got = f"{digest.split(':', 1)[0]}:{h.hexdigest()}"
    if got != digest:
        raise DigestMismatch(f"{what}: digest mismatch: expected {digest}, got {got}")
    return data


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON (sorted keys, no spaces) so equal objects have equal digests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# --- platform ---
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "arm", "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """Parse ``os/arch[/variant]`` as ``--platform`` takes it."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise FormatError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
        arch = _ARCH.get(parts[1], parts[1])
        variant = parts[2] if len(parts) == 3 else ""
        if arch == "arm64" and variant == "v8":
            variant = ""
        return cls(parts[0], arch, variant)

    @classmethod
    def host(cls) -> "Platform":
        machine = _platform.machine()
        arch = _ARCH.get(machine, machine)
        variant = "v7" if machine == "armv7l" else ("v6" if machine == "armv6l" else "")
        return cls("linux", arch, variant)

    def matches(self, other: "Platform") -> bool:
        """True if ``other`` (from an index) satisfies this requested platform."""
        if self.os != other.os or self.architecture != other.architecture:
            return False
        if self.variant and other.variant and self.variant != other.variant:
            return False
        return True

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        if self.os_version:
            d["os.version"] = self.os_version
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Platform":
        return cls(str(d.get("os", "")), str(d.get("architecture", "")),
                   str(d.get("variant", "") or ""), str(d.get("os.version", "") or ""))


# --- descriptor ---
@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform is not None:
            d["platform"] = self.platform.to_json()
        if self.urls:
            d["urls"] = list(self.urls)
        return d

    @classmethod
    def from_json(cls, d: Any, what: str = "descriptor") -> "Descriptor":
        if not isinstance(d, dict):
            raise FormatError(f"{what}: not an object")
        try:
            mt, dg, size = d["mediaType"], d["digest"], d["size"]
        except KeyError as exc:
            raise FormatError(f"{what}: missing field {exc.args[0]}") from None
        if not isinstance(mt, str) or not isinstance(dg, str) or not isinstance(size, int) or size < 0:
            raise FormatError(f"{what}: bad mediaType, digest or size")
        check_digest_syntax(dg)
        plat = Platform.from_json(d["platform"]) if isinstance(d.get("platform"), dict) else None
        return cls(mt, dg, size, dict(d.get("annotations") or {}), plat, tuple(d.get("urls") or ()))

    def with_annotations(self, **ann: str) -> "Descriptor":
        return replace(self, annotations={**self.annotations, **ann})


# --- manifest & index ---
@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = OCI_MANIFEST
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                             "config": self.config.to_json(),
                             "layers": [l.to_json() for l in self.layers]}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())


@dataclass(frozen=True)
class Index:
    manifests: tuple[Descriptor, ...]
    media_type: str = OCI_INDEX
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                             "manifests": [m.to_json() for m in self.manifests]}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    def select(self, want: Platform) -> Descriptor:
        """The manifest for ``want``; FormatError naming the platforms on offer if none fits."""
        for desc in self.manifests:
            if desc.platform is not None and want.matches(desc.platform):
                return desc
        offered = ", ".join(str(d.platform) for d in self.manifests if d.platform) or "none"
        raise FormatError(f"no image for platform {want} in index (has: {offered})")


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{what}: malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{what}: malformed JSON: not an object")
    return obj


def detect_media_type(data: bytes, declared: str | None, what: str) -> str:
    """The media type of a manifest or index: the declared one, else the JSON's, else by shape."""
    obj = _load_json(data, what)
    mt = obj.get("mediaType") or declared or ""
    if mt in MANIFEST_TYPES or mt in INDEX_TYPES:
        return mt
    if not mt:
        if "manifests" in obj:
            return OCI_INDEX
        if "config" in obj and "layers" in obj:
            return OCI_MANIFEST
    if obj.get("schemaVersion") == 1:
        raise FormatError(f"{what}: Docker schema1 manifests are not supported")
    raise FormatError(f"{what}: unknown media type {mt!r}")


def parse_manifest(data: bytes, what: str = "manifest") -> Manifest:
    obj = _load_json(data, what)
    mt = obj.get("mediaType") or OCI_MANIFEST
    if mt not in MANIFEST_TYPES:
        raise FormatError(f"{what}: unknown media type {mt!r}")
    if obj.get("schemaVersion") != 2:
        raise FormatError(f"{what}: unsupported schemaVersion {obj.get('schemaVersion')!r}")
    if not isinstance(obj.get("layers"), list):
        raise FormatError(f"{what}: missing layers")
    config = Descriptor.from_json(obj.get("config"), f"{what}: config")
    layers = tuple(Descriptor.from_json(l, f"{what}: layer {i}") for i, l in enumerate(obj["layers"]))
    for i, l in enumerate(layers):
        if l.media_type not in LAYER_TYPES:
            raise FormatError(f"{what}: layer {i}: unknown media type {l.media_type!r}")
    return Manifest(config, layers, mt, dict(obj.get("annotations") or {}))


def parse_index(data: bytes, what: str = "index") -> Index:
    obj = _load_json(data, what)
    mt = obj.get("mediaType") or OCI_INDEX
    if mt not in INDEX_TYPES:
        raise FormatError(f"{what}: unknown media type {mt!r}")
    if not isinstance(obj.get("manifests"), list):
        raise FormatError(f"{what}: missing manifests")
    descs = tuple(Descriptor.from_json(m, f"{what}: manifest {i}") for i, m in enumerate(obj["manifests"]))
    return Index(descs, mt, dict(obj.get("annotations") or {}))


# --- image config ---
@dataclass
class ImageConfig:
    """The image configuration blob (image-spec config.md). ``config`` is the
    runtime part (Env, Cmd, Entrypoint, WorkingDir, User, Labels, ExposedPorts,
    Volumes, StopSignal, and the Docker extensions Healthcheck, Shell, OnBuild),
    kept as the JSON dict so unknown keys survive a round trip."""

    architecture: str = ""
    os: str = "linux"
    variant: str = ""
    created: str | None = None
    author: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    diff_ids: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.extra)
        d.update({"architecture": self.architecture, "os": self.os,
                  "config": self.config, "rootfs": {"type": "layers", "diff_ids": list(self.diff_ids)},
                  "history": self.history})
        if self.variant:
            d["variant"] = self.variant
        if self.created:
            d["created"] = self.created
        if self.author:
            d["author"] = self.author
        return d

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)

    def copy(self) -> "ImageConfig":
        return parse_config(self.to_bytes())


_CONFIG_KEYS = {"architecture", "os", "variant", "created", "author", "config", "rootfs", "history"}


def parse_config(data: bytes, what: str = "image config") -> ImageConfig:
    obj = _load_json(data, what)
    rootfs = obj.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids", []), list):
        raise FormatError(f"{what}: missing rootfs.diff_ids")
    diff_ids = [check_digest_syntax(d) for d in rootfs.get("diff_ids", [])]
    cfg = obj.get("config") or {}
    if not isinstance(cfg, dict):
        raise FormatError(f"{what}: config is not an object")
    hist = obj.get("history") or []
    if not isinstance(hist, list):
        raise FormatError(f"{what}: history is not a list")
    return ImageConfig(
        architecture=str(obj.get("architecture", "")), os=str(obj.get("os", "linux")),
        variant=str(obj.get("variant", "") or ""), created=obj.get("created"),
        author=str(obj.get("author", "") or ""), config=dict(cfg), diff_ids=diff_ids,
        history=[dict(h) for h in hist if isinstance(h, dict)],
        extra={k: v for k, v in obj.items() if k not in _CONFIG_KEYS})


# --- format conversion (OCI <-> Docker schema2) ---
_TO_DOCKER = {OCI_MANIFEST: DOCKER_MANIFEST, OCI_INDEX: DOCKER_LIST, OCI_CONFIG: DOCKER_CONFIG,
              OCI_LAYER_GZIP: DOCKER_LAYER_GZIP, OCI_LAYER_ZSTD: DOCKER_LAYER_ZSTD,
              OCI_LAYER: DOCKER_LAYER_TAR, OCI_LAYER_ND_GZIP: DOCKER_LAYER_FOREIGN}
_TO_OCI = {v: k for k, v in _TO_DOCKER.items()}


def to_docker_type(media_type: str) -> str:
    return _TO_DOCKER.get(media_type, media_type)


def to_oci_type(media_type: str) -> str:
    return _TO_OCI.get(media_type, media_type)


def is_docker_type(media_type: str) -> bool:
    return media_type.startswith("application/vnd.docker.")


def convert_manifest(m: Manifest, docker: bool) -> Manifest:
    """The same manifest with every media type in the Docker or the OCI family.
    Docker schema2 has no manifest annotations, so they are dropped there."""
    conv = to_docker_type if docker else to_oci_type
    return Manifest(replace(m.config, media_type=conv(m.config.media_type)),
                    tuple(replace(l, media_type=conv(l.media_type)) for l in m.layers),
                    conv(m.media_type), {} if docker else dict(m.annotations))


def layer_media_type(compression: str, docker: bool) -> str:
    """Media type of a layer blob compressed with ``compression`` (gzip|zstd|none)."""
    oci = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}.get(compression)
    if oci is None:
        raise FormatError(f"unknown compression {compression!r}")
    return to_docker_type(oci) if docker else oci


def layer_compression(media_type: str) -> str:
    """gzip, zstd or none for a layer media type."""
    if media_type.endswith("gzip"):
        return "gzip"
    if media_type.endswith("zstd"):
        return "zstd"
    if media_type in (OCI_LAYER, DOCKER_LAYER_TAR):
        return "none"
    raise FormatError(f"unknown layer media type {media_type!r}")
