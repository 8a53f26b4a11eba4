"""Pull and push: image copies between the local store and any location.

``pull`` and ``push`` are the library's typed operations (buildah pull/push);
``pull_image`` and ``push_record`` the helpers they and the builder share."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from builder.errors import BaleError, ImageNotFound, NotFoundError, RegistryError
from builder.image.imagecopy import CopyResult, closing, copy_image
from builder.image.oci import Platform
from builder.image.transports import Location, open_destination, open_source, parse_location

from builder.options import PullOptions, PushOptions

if TYPE_CHECKING:
    from builder.workspace.workspace import Workspace
    from builder.progress import Progress
    from builder.image.registry.options import RegistryOptions
    from builder.image.store import ImageRecord

log = logging.getLogger("bale")


def _platform(text: str | None) -> Platform | None:
    return Platform.parse(text) if text else None


def source_candidates(text: str) -> list[Location]:
    """Where ``text`` may be pulled from: a transport as given, else the short-name candidates."""
    from builder.image.reference import resolve_short_name
    loc = parse_location(text)
    if loc.kind != "store":
        return [loc]
    return [Location("docker", reference=r) for r in resolve_short_name(text)]


def pull_image(ws: "Workspace", image: str, *, registry: "RegistryOptions | None" = None,
               platform: str | None = None, quiet: bool = True, progress: "Progress | None" = None) -> "ImageRecord":
    """Copy ``image`` into the store under its name; tries short-name candidates in order."""
    store = ws.store
    errors: list[str] = []
    for loc in source_candidates(image):
        names = [loc.reference.name] if loc.reference is not None else _names_for(loc)
        try:
            with closing(open_source(loc, store=store, registry=registry, progress=progress)) as src:
                if not names and getattr(src, "repo_tags", None):
                    from builder.image.imagenames import store_name
                    names = [store_name(t) for t in getattr(src, "repo_tags")]
                dst = open_destination(Location("store", ""), store=store, names=names)
                copy_image(src, dst, platform=_platform(platform), progress=progress, tmp_dir=store.tmp_dir)
                rec: ImageRecord | None = getattr(dst, "record", None)
                assert rec is not None
                return rec
        except NotFoundError as exc:
            errors.append(str(exc))
            continue
        except RegistryError as exc:
            if len(source_candidates(image)) == 1:
                raise
            errors.append(str(exc))
    if len(errors) == 1:
        raise ImageNotFound(errors[0])
    raise ImageNotFound(f"image {image}: not found in any search registry ({'; '.join(errors)})")


def _names_for(loc: Location) -> list[str]:
    """Store names for images pulled from layouts and archives: the ref when it looks like a name."""
    from builder.image.imagenames import store_name
    if loc.kind == "docker-archive" and loc.ref and not loc.ref.startswith("@"):
        return [store_name(loc.ref)]
    return []


def push_record(ws: "Workspace", rec: "ImageRecord", dest: str, *, registry: "RegistryOptions | None" = None,
                image_format: str | None = None, progress: "Progress | None" = None,
                quiet: bool = True) -> CopyResult:
    from builder.image.transports import StoreSource
    loc = parse_location(dest)
    if loc.kind == "store":
        raise BaleError(f"push {dest}: destination must be a transport (docker://, oci:, oci-archive:, "
                        "docker-archive:)")
    src = StoreSource(ws.store, rec)
    dst = open_destination(loc, store=ws.store, registry=registry, progress=progress, names=list(rec.names))
    return copy_image(src, dst, image_format=image_format, progress=progress, tmp_dir=ws.store.tmp_dir)


def pull(ws: "Workspace", image: str, opts: PullOptions = PullOptions(), *,
         progress: "Progress | None" = None) -> "ImageRecord":
    """`bale pull` (buildah pull): copy ``image`` into the workspace's store and name it there.

    ``image``: a reference (``busybox``, ``registry.example/app:1``, ``...@sha256:HEX``; a short
    name tries registries.conf's search registries in order, as containers/image does) or a
    transport (``docker://``, ``oci:DIR[:REF]``, ``oci-archive:FILE[:REF]``,
    ``docker-archive:FILE[:REF]``, ``dir:DIR``). From an index, the entry for
    ``opts.platform`` (default: this machine's) is taken. Returns the record (``.id`` the
    config digest ``sha256:HEX``, ``.names``). Raises ImageNotFound, RegistryError (AuthError,
    NotFoundError), DigestMismatch, FormatError, UsageError (malformed reference)."""
    return pull_image(ws, image, registry=opts.registry, platform=opts.platform, quiet=opts.quiet,
                      progress=progress)


def push(ws: "Workspace", image: str, destination: str | None = None, opts: PushOptions = PushOptions(), *,
         progress: "Progress | None" = None) -> CopyResult:
    """`bale push` (buildah push): copy the store image ``image`` (name or id) to ``destination``
    (a transport as for pull; a bare reference means ``docker://``; None: ``docker://IMAGE``).
    Blobs the registry already has, or has in another repository, are not sent again.
    Returns the CopyResult (``.manifest_digest`` of what was written). Raises ImageNotFound,
    RegistryError, UsageError (``opts.image_format`` docker with zstd layers)."""
    from builder.scripted import find_local_image
    rec = find_local_image(ws, image)
    if rec is None:
        raise ImageNotFound(f"image {image}: not known in the local store")
    dest = destination or "docker://" + (image if "/" in image or not rec.names else rec.names[0])
    if parse_location(dest).kind == "store":  # a bare reference names a registry
        dest = "docker://" + dest
    return push_record(ws, rec, dest, registry=opts.registry, image_format=opts.image_format, progress=progress,
                       quiet=opts.quiet)
