"""Assemble an image from a base image and new layers: config (diff_ids,
history), manifest (OCI or Docker schema2), all written to the store."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from builder.errors import UsageError
from builder.image.oci import (OCI_CONFIG, DOCKER_CONFIG, DOCKER_MANIFEST, OCI_MANIFEST, Descriptor, ImageConfig,
                         Manifest, Platform, is_docker_type, layer_compression, to_docker_type, to_oci_type)
from builder.image.store import ImageRecord, Store


@dataclass(frozen=True)
class Layer:
    """A layer blob in the store and its uncompressed digest."""

    descriptor: Descriptor
    diff_id: str

    @property
    def digest(self) -> str:
        """The stored (compressed) blob's digest."""
        return self.descriptor.digest

    @property
    def media_type(self) -> str:
        return self.descriptor.media_type

    @property
    def size(self) -> int:
        """The stored blob's size in bytes."""
        return self.descriptor.size

    @property
    def layer_id(self) -> str:
        """Snapshotter key of the unpacked layer (diff_id hex)."""
        return self.diff_id.split(":", 1)[1]


def rfc3339(ts: float) -> str:
    from datetime import datetime, timezone  # at the first commit, not at import (start-up: issue 10)
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def history_entry(created_by: str, *, empty_layer: bool, timestamp: float | None = None,
                  comment: str = "", author: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {"created": rfc3339(time.time() if timestamp is None else timestamp),
                             "created_by": created_by}
    if comment:
        entry["comment"] = comment
    if author:
        entry["author"] = author
    if empty_layer:
        entry["empty_layer"] = True
    return entry


def write_image(store: Store, config: ImageConfig, layers: list[Layer], *, image_format: str = "oci",
                names: list[str] = (), timestamp: float | None = None,  # type: ignore[assignment]
                annotations: dict[str, str] | None = None) -> ImageRecord:
    """Store config + manifest for ``layers`` (bottom first) and record the image under ``names``.

    ``config.diff_ids`` is rewritten from ``layers``; ``created`` is ``timestamp`` (reproducible
    builds) or now. History entries are taken as they are."""
    docker = image_format == "docker"
    if image_format not in ("oci", "docker"):
        raise UsageError(f"unknown image format {image_format!r}: expected oci or docker")
    config = config.copy()
    config.diff_ids = [l.diff_id for l in layers]
    config.created = rfc3339(time.time() if timestamp is None else timestamp)
    if not config.architecture:
        host = Platform.host()
        config.architecture, config.variant = host.architecture, host.variant
    if not config.os:
        config.os = "linux"
    config_bytes = config.to_bytes()
    config_digest = store.put_bytes(config_bytes)
    descs = []
    for l in layers:
        mt = l.descriptor.media_type
        if docker and layer_compression(mt) == "zstd":
            raise UsageError("zstd-compressed layers cannot be written in docker format: use --compression gzip")
        descs.append(Descriptor(to_docker_type(mt) if docker else to_oci_type(mt), l.descriptor.digest,
                                l.descriptor.size))
    manifest = Manifest(Descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config_digest, len(config_bytes)),
                        tuple(descs), DOCKER_MANIFEST if docker else OCI_MANIFEST,
                        {} if docker else dict(annotations or {}))
    manifest_digest = store.put_bytes(manifest.to_bytes())
    return store.add_image(manifest_digest, list(names))


def image_layers(store: Store, rec: ImageRecord) -> tuple[ImageConfig, list[Layer]]:
    """Config and layers of a stored image, pairing each blob with its diff_id."""
    from builder.image.oci import parse_config
    _, manifest = store.manifest_of(rec)
    config = parse_config(store.read_blob(manifest.config.digest))
    if len(config.diff_ids) != len(manifest.layers):
        raise UsageError(f"image {rec.id}: {len(manifest.layers)} layers but {len(config.diff_ids)} diff_ids")
    return config, [Layer(d, diff) for d, diff in zip(manifest.layers, config.diff_ids)]


def is_docker_image(rec: ImageRecord) -> bool:
    return is_docker_type(rec.manifest_media_type)
