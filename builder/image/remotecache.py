"""The remote layer cache of ``bud --layers --cache-to REPO --cache-from REPO``: each cached
step's result as a one-layer image in a registry repository, tagged with the step's cache
key (builder.build.cache.step_key: 64 hex digits, a valid tag), so two stores that share
only a registry share work.

An entry is an OCI image manifest whose config is an image config with
``rootfs.diff_ids`` = [the layer's diff_id] (none for a step that changed nothing) and the
label ``io.bale.cache.key`` = the key, and whose one layer is the step's layer blob as the
local cache has it. buildah's --cache-to pushes intermediate images the same way (tagged
by its cache key); its keys differ from bale's, so the two do not share entries.

``lookup`` tries each --cache-from repository in order; a hit copies the layer blob into the
store (verified) and returns it; a registry error is a miss (logged), so a cache repository
that is down or empty never fails a build. ``record`` pushes an entry to --cache-to; a
failed push is logged and the build goes on."""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from builder.errors import BaleError, NotFoundError, UsageError
from builder.image.commit import Layer
from builder.image.oci import OCI_CONFIG, OCI_MANIFEST, Descriptor, parse_config, parse_manifest, sha256_digest
from builder.image.reference import parse_reference
from builder.image.registry.client import RegistryClient

if TYPE_CHECKING:
    from builder.image.reference import ImageReference
    from builder.image.registry.client import RegistryClient
    from builder.image.registry.options import RegistryOptions
    from builder.image.store import Store

log = logging.getLogger("bale")
KEY_LABEL = "io.bale.cache.key"


def split_cache_spec(text: str) -> tuple[str, bool]:
    """(repository, mounts) of ``REPO[,mounts=true]`` or BuildKit's ``type=registry,ref=REPO[,mounts=true]``."""
    first, *rest = text.split(",")
    fields = dict(kv.partition("=")[::2] for kv in rest)
    if "=" in first:
        fields.update([first.partition("=")[::2]])
        first = fields.pop("ref", "")
        if fields.pop("type", "registry") != "registry":
            raise UsageError(f"cache {text!r}: only type=registry is supported")
    mounts = fields.pop("mounts", "false").lower() in ("1", "t", "true")
    if fields or not first:
        raise UsageError(f"cache {text!r}: expected REPO[,mounts=true] or type=registry,ref=REPO[,mounts=true]")
    return first, mounts


def parse_cache_repo(text: str) -> "ImageReference":
    """``REGISTRY/REPO`` (a tag or digest is refused: entries are tagged by key)."""
    text = split_cache_spec(text)[0]
    ref = parse_reference(text.removeprefix("docker://"))
    if ref.digest or (ref.tag and ref.tag != "latest") or text.rstrip().endswith(":latest"):
        raise UsageError(f"cache repository {text!r}: name a repository without a tag (entries are tagged by "
                         "cache key)")
    return ref


@dataclass
class RemoteCache:
    """--cache-from repositories (looked up in order) and the --cache-to one (or None)."""
    store: "Store"
    sources: list["ImageReference"]
    target: "ImageReference | None"
    options: "RegistryOptions"
    platform: str = "linux/amd64"
    #: ``,mounts=true``: RUN cache mounts are imported from the sources / exported to the target
    mounts_from: bool = False
    mounts_to: bool = False
    _clients: dict[str, "RegistryClient"] = field(default_factory=dict)

    @classmethod
    def from_flags(cls, store: "Store", cache_from: list[str], cache_to: str | None, options: "RegistryOptions",
                   platform: str) -> "RemoteCache | None":
        if not cache_from and not cache_to:
            return None
        return cls(store, [parse_cache_repo(r) for r in cache_from], parse_cache_repo(cache_to) if cache_to else None,
                   options, platform, mounts_from=any(split_cache_spec(r)[1] for r in cache_from),
                   mounts_to=bool(cache_to) and split_cache_spec(cache_to or "")[1])

    def _client(self, registry: str) -> "RegistryClient":
        if registry not in self._clients:
            self._clients[registry] = RegistryClient(registry, self.options)
        return self._clients[registry]

    def lookup(self, key: str) -> tuple[Layer | None] | None:
        """``(layer,)`` or ``(None,)`` (a step that changed nothing) from the first repository
        with an entry for ``key``; None on a miss."""
        for ref in self.sources:
            try:
                return self._fetch(ref, key)
            except NotFoundError:
                continue
            except BaleError as exc:
                log.warning("--cache-from %s: %s (treated as a miss)", ref.repo_name, exc)
        return None

    def _fetch(self, ref: "ImageReference", key: str) -> tuple[Layer | None]:
        client = self._client(ref.registry)
        data, _mt, _digest = client.get_manifest(ref.repository, key)
        man = parse_manifest(data, f"cache entry {ref.repo_name}:{key[:12]}")
        buf = io.BytesIO()
        client.fetch_blob(ref.repository, man.config, buf)
        cfg = parse_config(buf.getvalue(), f"cache entry {ref.repo_name}:{key[:12]} config")
        if (cfg.config.get("Labels") or {}).get(KEY_LABEL) != key:
            raise NotFoundError(f"cache entry {ref.repo_name}:{key[:12]}: written for another key")
        if not man.layers:
            return (None,)
        desc = man.layers[0]
        if not self.store.has_blob(desc.digest):
            with self.store.writer(desc.digest, desc.size) as w:
                client.fetch_blob(ref.repository, desc, w)
                w.commit()
        self.store.set_diff_id(cfg.diff_ids[0], desc)
        self.store.note_source(desc.digest, ref.repo_name)
        log.info("cache entry %s from %s", key[:12], ref.repo_name)
        return (Layer(Descriptor(desc.media_type, desc.digest, desc.size), cfg.diff_ids[0]),)

    def record(self, key: str, layer: Layer | None) -> None:
        """Push the entry for ``key`` to --cache-to (failures are logged, not raised)."""
        if self.target is None:
            return
        try:
            self._push(self.target, key, layer)
        except BaleError as exc:
            log.warning("--cache-to %s: %s (the build goes on)", self.target.repo_name, exc)

    def _push(self, ref: "ImageReference", key: str, layer: Layer | None) -> None:
        client = self._client(ref.registry)
        os_, _, arch = self.platform.partition("/")
        cfg = {"architecture": arch.split("/")[0] or "amd64", "os": os_ or "linux",
               "config": {"Labels": {KEY_LABEL: key}},
               "rootfs": {"type": "layers", "diff_ids": [layer.diff_id] if layer else []}}
        cfg_bytes = json.dumps(cfg, sort_keys=True).encode()
        cfg_desc = Descriptor(OCI_CONFIG, sha256_digest(cfg_bytes), len(cfg_bytes))
        client.push_blob(ref.repository, cfg_desc, lambda off: io.BytesIO(cfg_bytes[off:]))
        layers = []
        if layer is not None:
            d = layer.descriptor
            store = self.store

            def open_at(off: int) -> "io.BufferedReader":
                fh = open(store.blob_path(d.digest), "rb")
                fh.seek(off)
                return fh
            client.push_blob(ref.repository, d, open_at,
                             [r.split("/", 1)[1] for r in store.blob_sources(d.digest)
                              if r.startswith(ref.registry + "/")])
            layers.append(d.to_json())
        man = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg_desc.to_json(), "layers": layers}
        client.put_manifest(ref.repository, key, json.dumps(man).encode(), OCI_MANIFEST)
        log.info("cache entry %s to %s", key[:12], ref.repo_name)
