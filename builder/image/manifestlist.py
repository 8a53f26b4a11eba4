"""Manifest lists (OCI image indexes and Docker manifest lists) in the local store, as
``buildah manifest`` keeps them, and pushing them with their images.

A list is a name and the digest of its index blob in the store's blobs/; the names are in
``ROOT/manifests.json`` (``{"lists": [{"name", "digest"}]}``, rewritten atomically under the
store lock). Instances are referred to by manifest digest: their manifests, configs and
layers stay in the store as long as a list names them (``live_digests``, which the store's
gc adds to what it keeps), whether or not an image record still does.

Index JSON as image-spec image-index.md and Docker's manifest list v2 schema 2 give it:
``schemaVersion`` 2, ``mediaType``, ``manifests`` of descriptors with ``platform``
(``architecture``, ``os``, ``variant``, ``os.version``, ``os.features``)."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import ImageNotFound, UsageError
from builder.image import sign
from builder.image.imagecopy import copy_image
from builder.image.imagenames import lookup_candidates, store_name
from builder.image.layout import OCILayout
from builder.image.oci import (DOCKER_LIST, DOCKER_MANIFEST, INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST,
                               Descriptor, detect_media_type, parse_config, parse_index, parse_manifest, sha256_digest)
from builder.image.reference import check_not_blocked
from builder.image.registry.client import RegistryClient
from builder.image.registry.options import RegistryOptions
from builder.image.store import ImageRecord
from builder.image.transports import LayoutDestination, RegistryDestination, StoreSource, parse_location

if TYPE_CHECKING:
    from builder.image.imagecopy import CopyResult
    from builder.image.registry.options import RegistryOptions
    from builder.image.store import ImageRecord, Store
    from builder.progress import Progress
    from builder.workspace.workspace import Workspace

LISTS_FILE = "manifests.json"


@dataclass(frozen=True)
class ManifestList:
    """A named list in the store: ``digest`` is its index blob (``sha256:HEX``)."""
    name: str
    digest: str


def _path(store: "Store") -> Path:
    return Path(store.root) / LISTS_FILE


def lists(store: "Store") -> list[ManifestList]:
    """Every list in the store, in the order they were made."""
    try:
        data = json.loads(_path(store).read_text())
    except FileNotFoundError:
        return []
    except ValueError as exc:
        from builder.errors import StoreError
        raise StoreError(f"corrupt manifest list file {_path(store)}: {exc}") from None
    return [ManifestList(d["name"], d["digest"]) for d in data.get("lists", [])]


def _save(store: "Store", items: list[ManifestList]) -> None:
    store._write_json_atomic(_path(store), {"lists": [{"name": l.name, "digest": l.digest} for l in items]})


def find_list(store: "Store", name: str) -> ManifestList | None:
    """The list named ``name`` (short names as for images: ``localhost/NAME:latest``), or None."""
    have = {l.name: l for l in lists(store)}
    for cand in lookup_candidates(name):
        if cand in have:
            return have[cand]
    return None


def get_list(store: "Store", name: str) -> ManifestList:
    lst = find_list(store, name)
    if lst is None:
        raise ImageNotFound(f"manifest list {name}: not known in the local store")
    return lst


def read_index(store: "Store", lst: ManifestList) -> dict[str, Any]:
    """The list's index JSON."""
    obj: dict[str, Any] = json.loads(store.read_blob(lst.digest, f"manifest list {lst.name}"))
    return obj


def new_index(media_type: str = OCI_INDEX) -> dict[str, Any]:
    if media_type not in INDEX_TYPES:
        raise UsageError(f"invalid manifest list type {media_type!r}")
    return {"schemaVersion": 2, "mediaType": media_type, "manifests": []}


def save(store: "Store", name: str, index: dict[str, Any]) -> ManifestList:
    """Write ``index`` to the store and point ``name`` at it (made or replaced)."""
    full = store_name(name)
    data = json.dumps(index, indent=4).encode()
    parse_index(data, f"manifest list {full}")
    with store.lock():
        digest = store.put_bytes(data)
        items = [l for l in lists(store) if l.name != full]
        lst = ManifestList(full, digest)
        _save(store, items + [lst])
    return lst


def remove(store: "Store", name: str) -> ManifestList:
    """Drop the list ``name`` (its blobs go at the next gc if nothing else keeps them)."""
    with store.lock():
        lst = get_list(store, name)
        _save(store, [l for l in lists(store) if l.name != lst.name])
    return lst


def platform_of(store: "Store", manifest_digest: str) -> dict[str, Any]:
    """The ``platform`` of an instance: its config's architecture, os, variant, os.version."""
    man = parse_manifest(store.read_blob(manifest_digest), f"manifest {manifest_digest}")
    cfg = parse_config(store.read_blob(man.config.digest), f"config of {manifest_digest}")
    plat: dict[str, Any] = {"architecture": cfg.architecture, "os": cfg.os}
    if cfg.variant:
        plat["variant"] = cfg.variant
    osv = cfg.extra.get("os.version")
    if osv:
        plat["os.version"] = osv
    return plat


def add_instance(store: "Store", index: dict[str, Any], manifest_digest: str, *, os: str | None = None,
                 arch: str | None = None, variant: str | None = None, os_version: str | None = None,
                 features: list[str] | None = None, annotations: dict[str, str] | None = None,
                 replace_platform: bool = False) -> dict[str, Any]:
    """Add the store manifest ``manifest_digest`` to ``index`` (in place; returned) with its
    platform (overridden by the keyword arguments). ``replace_platform``: entries with the
    same platform go first (a rebuild of one platform replaces it)."""
    data = store.read_blob(manifest_digest, f"manifest {manifest_digest}")
    mt = detect_media_type(data, None, f"manifest {manifest_digest}")
    if mt not in MANIFEST_TYPES:
        raise UsageError(f"manifest {manifest_digest}: a list cannot hold another list")
    plat = platform_of(store, manifest_digest)
    for key, value in (("os", os), ("architecture", arch), ("variant", variant), ("os.version", os_version)):
        if value:
            plat[key] = value
    if features:
        plat["os.features"] = list(features)
    entries = [m for m in index["manifests"] if m.get("digest") != manifest_digest]
    if replace_platform:
        entries = [m for m in entries if m.get("platform") != plat]
    desc: dict[str, Any] = {"mediaType": mt, "digest": manifest_digest, "size": len(data), "platform": plat}
    if annotations:
        desc["annotations"] = dict(annotations)
    index["manifests"] = entries + [desc]
    return index


def remove_instance(index: dict[str, Any], digest: str, list_name: str) -> dict[str, Any]:
    keep = [m for m in index["manifests"] if m.get("digest") != digest]
    if len(keep) == len(index["manifests"]):
        raise ImageNotFound(f"manifest list {list_name}: has no instance {digest}")
    index["manifests"] = keep
    return index


def annotate(index: dict[str, Any], digest: str, list_name: str, *, annotations: dict[str, str],
             os: str | None = None, arch: str | None = None, variant: str | None = None) -> dict[str, Any]:
    """``buildah manifest annotate``: change an instance's platform fields and annotations."""
    for m in index["manifests"]:
        if m.get("digest") == digest:
            plat = m.setdefault("platform", {})
            for key, value in (("os", os), ("architecture", arch), ("variant", variant)):
                if value:
                    plat[key] = value
            if annotations:
                m["annotations"] = {**(m.get("annotations") or {}), **annotations}
            return index
    raise ImageNotFound(f"manifest list {list_name}: has no instance {digest}")


def live_digests(store: "Store") -> set[str]:
    """Every blob the store's lists reach: each index, and each instance's manifest, config and
    layers that are in the store (the store's gc keeps these)."""
    live: set[str] = set()
    for lst in lists(store):
        live.add(lst.digest)
        try:
            idx = parse_index(store.read_blob(lst.digest))
        except Exception:  # a corrupt list keeps what it names; reported when used
            continue
        for d in idx.manifests:
            live.add(d.digest)
            try:
                man = parse_manifest(store.read_blob(d.digest))
            except Exception:
                continue
            live.add(man.config.digest)
            live.update(l.digest for l in man.layers)
    return live


def instance_record(store: "Store", desc: Descriptor) -> "ImageRecord":
    """A record for an instance (one may no longer exist in images.json: the blobs do)."""
    man = parse_manifest(store.read_blob(desc.digest, f"manifest {desc.digest}"))
    return ImageRecord(man.config.digest, desc.digest, desc.media_type, [])


def list_type(image_format: str | None, current: str) -> str:
    """The index media type for ``--format`` (oci, docker/v2s2) or the list's own."""
    if image_format in (None, ""):
        return current
    if image_format == "oci":
        return OCI_INDEX
    if image_format in ("docker", "v2s2"):
        return DOCKER_LIST
    raise UsageError(f"invalid --format {image_format!r}: expected oci or v2s2")


def push_list(ws: "Workspace", name_or_list: "str | ManifestList", destination: str, *, all_images: bool = True,
              image_format: str | None = None, registry: "RegistryOptions | None" = None,
              progress: "Progress | None" = None, remove_signatures: bool = False) -> str:
    """``buildah manifest push [--all]``: copy the list's images (``all_images``) and then the
    index to ``destination`` (``docker://REF`` or ``oci:DIR[:REF]``; a bare reference is a
    registry). ``image_format`` oci or v2s2 converts images and the list. Returns the digest
    of the index written. Raises ImageNotFound, UsageError (another transport), RegistryError."""
    store = ws.store
    lst = name_or_list if isinstance(name_or_list, ManifestList) else get_list(store, name_or_list)
    index = read_index(store, lst)
    fmt = "docker" if image_format == "v2s2" else image_format
    mt = list_type(image_format, str(index.get("mediaType") or OCI_INDEX))
    loc = parse_location(destination)
    if loc.kind == "store":
        loc = parse_location("docker://" + destination)
    if loc.kind not in ("docker", "oci"):
        raise UsageError(f"manifest push {destination}: a manifest list can be pushed to docker:// or oci: only")
    new_entries = []
    for entry in index["manifests"]:
        desc = Descriptor(entry["mediaType"], entry["digest"], int(entry["size"]))
        if all_images:
            dst = _instance_destination(loc, store, registry, progress)
            result: "CopyResult" = copy_image(StoreSource(store, instance_record(store, desc)), dst,
                                              image_format=fmt, progress=progress, tmp_dir=store.tmp_dir)
            entry = {**entry, "mediaType": result.media_type, "digest": result.manifest_digest,
                     "size": len(result.manifest)}
        new_entries.append(entry)
    out = {**index, "mediaType": mt, "manifests": new_entries}
    if mt == DOCKER_LIST:
        out.pop("annotations", None)
        if any(e["mediaType"] == OCI_MANIFEST for e in new_entries):
            raise UsageError(f"manifest push {destination}: a Docker manifest list cannot hold OCI manifests "
                             "(push with --format v2s2 --all)")
    data = json.dumps(out, indent=4).encode()
    return _put_index(loc, store, data, mt, registry, progress)


def _instance_destination(loc: Any, store: "Store", registry: "RegistryOptions | None",
                          progress: "Progress | None") -> Any:

    class _ByDigest(RegistryDestination):
        def put_manifest(self, data: bytes, media_type: str, config: bytes, diff_ids: list[str]) -> str:
            return self.client.put_manifest(self.ref.repository, sha256_digest(data), data, media_type)

    class _BlobOnly(LayoutDestination):
        def put_manifest(self, data: bytes, media_type: str, config: bytes, diff_ids: list[str]) -> str:
            return self.layout.put_bytes(data, media_type).digest

    if loc.kind == "docker":
        check_not_blocked(loc.reference.name)
        return _ByDigest(RegistryClient(loc.reference.registry, registry or RegistryOptions(), progress),
                         loc.reference)
    return _BlobOnly(Path(loc.path), None, str(loc))


def _put_index(loc: Any, store: "Store", data: bytes, mt: str, registry: "RegistryOptions | None",
               progress: "Progress | None") -> str:
    if loc.kind == "docker":
        ref = loc.reference
        opts = registry or RegistryOptions()
        client = RegistryClient(ref.registry, opts, progress)
        digest = client.put_manifest(ref.repository, ref.digest or ref.tag or "latest", data, mt)
        if opts.sign_by_sigstore_key:
            key = sign.load_private_key(opts.sign_by_sigstore_key, opts.sign_passphrase)
            sign.sign_image(client, ref.repository, ref.repo_name, digest, key)
        if progress:
            progress.log(f"Writing manifest list {digest}")
        return str(digest)
    layout = OCILayout(Path(loc.path))
    layout.init()
    desc = layout.put_bytes(data, mt)
    layout.add_manifest(replace(desc, media_type=mt), loc.ref)
    return desc.digest


__all__ = ["ManifestList", "lists", "find_list", "get_list", "read_index", "new_index", "save", "remove",
           "add_instance", "remove_instance", "annotate", "live_digests", "push_list", "DOCKER_MANIFEST"]
