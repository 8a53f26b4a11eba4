"""`bale manifest create|add|remove|annotate|inspect|push|rm|exists`, as buildah's manifest verbs."""
from __future__ import annotations

import json
from typing import Any

import click

from builder.cli.gobool import GoBoolGroup
from builder.cli.options import progress_options, registry_options, registry_options_from


def _ws(ctx: click.Context) -> Any:
    from builder.cli.context import workspace
    return workspace(ctx)


def _add_image(ws: Any, index: dict[str, Any], image: str, all_: bool, regopts: Any, **plat: Any) -> list[str]:
    """Add ``image`` (a store image, or any transport: copied into the store unnamed) to
    ``index``; with ``all_`` every instance of a source index. Returns the digests added."""
    from builder.image import manifestlist as ml
    from builder.image.imagecopy import closing, copy_image
    from builder.image.oci import INDEX_TYPES, Platform, parse_index
    from builder.image.transports import Location, open_destination, open_source, parse_location
    from builder.scripted import find_local_image
    store = ws.store
    loc = parse_location(image)
    if loc.kind == "store":
        rec = find_local_image(ws, image)
        if rec is None:
            loc = parse_location("docker://" + image)
        else:
            ml.add_instance(store, index, rec.manifest_digest, **plat)
            return [rec.manifest_digest]
    added = []
    with closing(open_source(loc, store=store, registry=regopts)) as src:
        raw, mt = src.raw_manifest()
        wanted: list[Platform | None] = [None]
        if all_ and mt in INDEX_TYPES:
            wanted = [d.platform for d in parse_index(raw).manifests if d.platform is not None]
        for p in wanted:
            dst = open_destination(Location("store", ""), store=store, names=[])
            result = copy_image(src, dst, platform=p, tmp_dir=store.tmp_dir)
            ml.add_instance(store, index, result.manifest_digest, **plat)
            added.append(result.manifest_digest)
    return added


@click.group("manifest", cls=GoBoolGroup)
def manifest() -> None:
    """Create and change manifest lists (image indexes) and push them with their images."""


@manifest.command("create")
@click.option("--all", "all_", is_flag=True, help="Add every instance of an IMAGE that is a list.")
@click.option("--amend", is_flag=True, help="Change the list if it exists already.")
@click.option("--format", "image_format", type=click.Choice(["oci", "v2s2", "docker"]), default="oci",
              show_default=True, help="Index (oci) or Docker manifest list (v2s2).")
@registry_options
@click.argument("name")
@click.argument("images", nargs=-1)
@click.pass_context
def create(ctx: click.Context, /, name: str, images: tuple[str, ...], all_: bool, amend: bool, image_format: str,
           **kw: Any) -> None:
    """Create the manifest list NAME, with IMAGES in it; prints its digest."""
    from builder.errors import UsageError
    from builder.image import manifestlist as ml
    ws = _ws(ctx)
    existing = ml.find_list(ws.store, name)
    if existing is not None and not amend:
        raise UsageError(f"manifest list {name}: exists already (use --amend, or manifest rm)")
    index = ml.read_index(ws.store, existing) if existing else ml.new_index(ml.list_type(image_format, ""))
    regopts = registry_options_from(kw)
    for image in images:
        _add_image(ws, index, image, all_, regopts)
    click.echo(ml.save(ws.store, name, index).digest)


@manifest.command("add")
@click.option("--all", "all_", is_flag=True, help="Add every instance of an IMAGE that is a list.")
@click.option("--arch", default=None, help="Override the architecture of the instance.")
@click.option("--os", "os_", default=None, help="Override the OS of the instance.")
@click.option("--variant", default=None)
@click.option("--os-version", default=None)
@click.option("--features", multiple=True)
@click.option("--annotation", "annotations", multiple=True, metavar="K=V")
@registry_options
@click.argument("name")
@click.argument("image")
@click.pass_context
def add(ctx: click.Context, /, name: str, image: str, all_: bool, arch: str | None, os_: str | None,
        variant: str | None, os_version: str | None, features: tuple[str, ...], annotations: tuple[str, ...],
        **kw: Any) -> None:
    """Add IMAGE (a store image or any transport) to the list NAME; prints the list's digest."""
    from builder.build.options import parse_kv_list
    from builder.image import manifestlist as ml
    ws = _ws(ctx)
    lst = ml.get_list(ws.store, name)
    index = ml.read_index(ws.store, lst)
    _add_image(ws, index, image, all_, registry_options_from(kw), os=os_, arch=arch, variant=variant,
               os_version=os_version, features=list(features),
               annotations=parse_kv_list(annotations, "--annotation"))
    click.echo(ml.save(ws.store, lst.name, index).digest)


@manifest.command("remove")
@click.argument("name")
@click.argument("digest")
@click.pass_context
def remove(ctx: click.Context, /, name: str, digest: str) -> None:
    """Remove the instance DIGEST from the list NAME."""
    from builder.image import manifestlist as ml
    ws = _ws(ctx)
    lst = ml.get_list(ws.store, name)
    index = ml.remove_instance(ml.read_index(ws.store, lst), digest, lst.name)
    click.echo(ml.save(ws.store, lst.name, index).digest)


@manifest.command("annotate")
@click.option("--arch", default=None)
@click.option("--os", "os_", default=None)
@click.option("--variant", default=None)
@click.option("--annotation", "annotations", multiple=True, metavar="K=V")
@click.argument("name")
@click.argument("digest")
@click.pass_context
def annotate(ctx: click.Context, /, name: str, digest: str, arch: str | None, os_: str | None, variant: str | None,
             annotations: tuple[str, ...]) -> None:
    """Change the platform or annotations of the instance DIGEST in the list NAME."""
    from builder.build.options import parse_kv_list
    from builder.image import manifestlist as ml
    ws = _ws(ctx)
    lst = ml.get_list(ws.store, name)
    index = ml.annotate(ml.read_index(ws.store, lst), digest, lst.name,
                        annotations=parse_kv_list(annotations, "--annotation"), os=os_, arch=arch, variant=variant)
    click.echo(ml.save(ws.store, lst.name, index).digest)


@manifest.command("inspect")
@registry_options
@click.argument("name")
@click.pass_context
def inspect(ctx: click.Context, /, name: str, **kw: Any) -> None:
    """Print the index of the list NAME (a store list, or any image location)."""
    from builder.image import manifestlist as ml
    from builder.image.imagecopy import closing
    from builder.image.transports import open_source, parse_location
    ws = _ws(ctx)
    lst = ml.find_list(ws.store, name) if parse_location(name).kind == "store" else None
    if lst is not None:
        click.echo(json.dumps(ml.read_index(ws.store, lst), indent=4))
        return
    loc = parse_location(name)
    if loc.kind == "store":
        loc = parse_location("docker://" + name)
    with closing(open_source(loc, store=ws.store, registry=registry_options_from(kw))) as src:
        raw, _ = src.raw_manifest()
    click.echo(json.dumps(json.loads(raw), indent=4))


@manifest.command("push")
@click.option("--all/--no-all", "all_", default=True, show_default=True,
              help="Push the list's images too (--all=false: the index alone).")
@click.option("--format", "-f", "image_format", type=click.Choice(["oci", "v2s2", "docker"]), default=None,
              help="Convert the list and its images (default: as they are).")
@click.option("--rm", "remove_after", is_flag=True, help="Remove the list from the store after pushing.")
@click.option("--digestfile", default=None, help="Write the pushed list's digest here.")
@click.option("--remove-signatures", is_flag=True, hidden=True)
@click.option("--purge", is_flag=True, hidden=True)
@progress_options
@registry_options
@click.argument("name")
@click.argument("destination", required=False)
@click.pass_context
def push(ctx: click.Context, /, name: str, destination: str | None, all_: bool, image_format: str | None,
         remove_after: bool, digestfile: str | None, remove_signatures: bool, purge: bool, quiet: bool,
         progress: str, **kw: Any) -> None:
    """Push the list NAME (and with --all its images) to DESTINATION (default docker://NAME)."""
    from builder.cli.progress import make_progress
    from builder.image import manifestlist as ml
    ws = _ws(ctx)
    lst = ml.get_list(ws.store, name)
    digest = ml.push_list(ws, lst, destination or name, all_images=all_, image_format=image_format,
                          registry=registry_options_from(kw), progress=make_progress(quiet, progress))
    if digestfile:
        with open(digestfile, "w") as fh:
            fh.write(digest)
    if remove_after or purge:
        ml.remove(ws.store, lst.name)
    if not quiet:
        click.echo(digest)


@manifest.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, /, names: tuple[str, ...]) -> None:
    """Remove manifest lists from the store (their images stay while named or in another list)."""
    from builder.image import manifestlist as ml
    ws = _ws(ctx)
    for name in names:
        click.echo(ml.remove(ws.store, name).name)


@manifest.command("exists")
@click.argument("name")
@click.pass_context
def exists(ctx: click.Context, /, name: str) -> None:
    """Exit 0 if the list NAME exists, 1 if not."""
    from builder.image import manifestlist as ml
    ctx.exit(0 if ml.find_list(_ws(ctx).store, name) else 1)
