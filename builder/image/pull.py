"""Pull and push: image copies between the local store and any location."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from builder.errors import BaleError, ImageNotFound, NotFoundError, RegistryError
from builder.image.imagecopy import CopyResult, closing, copy_image
from builder.image.oci import Platform
from builder.image.transports import Location, open_destination, open_source, parse_location

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
                    names = [store_name(t) for t in src.repo_tags]  # type: ignore[attr-defined]
                dst = open_destination(Location("store", ""), store=store, names=names)
                copy_image(src, dst, platform=_platform(platform), progress=progress, tmp_dir=store.tmp_dir)
                rec = dst.record  # type: ignore[attr-defined]
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
