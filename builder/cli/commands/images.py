"""Image commands: pull, push, images, inspect, tag, rmi, prune."""
from __future__ import annotations

import json
import time
from typing import Any

import click

from builder.cli.options import signing_options, output_options, platform_option, progress_options, registry_options, \
    registry_options_from


def _app(ctx: click.Context) -> Any:
    from builder.cli.context import workspace
    return workspace(ctx)


@click.command("pull")
@click.option("--all-tags", "-a", is_flag=True, help="Not supported; accepted for compatibility.", hidden=True)
@progress_options
@platform_option
@registry_options
@click.argument("source")
@click.pass_context
def pull(ctx: click.Context, source: str, quiet: bool, progress: str, platform: str | None, all_tags: bool,
         **kw: Any) -> None:
    """Copy SOURCE (a registry image, oci:, oci-archive:, docker-archive:) into the local store."""
    from builder.cli.progress import make_progress
    from builder.image.pull import pull as pull_op
    from builder.options import PullOptions
    opts = PullOptions(registry=registry_options_from(kw), platform=platform, quiet=quiet)
    rec = pull_op(_app(ctx), source, opts, progress=make_progress(quiet, progress))
    click.echo(rec.id.split(":", 1)[1])


@click.command("push")
@click.option("--digestfile", default=None, help="Write the pushed manifest's digest here.")
@click.option("--remove-signatures", is_flag=True, hidden=True)
@output_options
@progress_options
@registry_options
@signing_options
@click.argument("image")
@click.argument("destination", required=False)
@click.pass_context
def push(ctx: click.Context, image: str, destination: str | None, digestfile: str | None, quiet: bool,
         progress: str, image_format: str | None, compression: str | None, compression_level: int | None,
         remove_signatures: bool, **kw: Any) -> None:
    """Copy IMAGE from the store to DESTINATION (default: docker://IMAGE)."""
    from builder.cli.progress import make_progress
    from builder.image.pull import push as push_op
    from builder.options import PushOptions
    opts = PushOptions(registry=registry_options_from(kw), image_format=image_format, quiet=quiet)
    result = push_op(_app(ctx), image, destination, opts, progress=make_progress(quiet, progress))
    if digestfile:
        with open(digestfile, "w") as fh:
            fh.write(result.manifest_digest)
    if not quiet:
        click.echo(result.manifest_digest)


def _human_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}" if unit != "B" else f"{n} B"
        n /= 1000  # type: ignore[assignment]
    return f"{n:.3g} TB"


def _ago(ts: float) -> str:
    d = max(0, time.time() - ts)
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if d >= size:
            n = int(d // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "Less than a minute ago" if d > 1 else "Now"


@click.command("images")
@click.option("--format", "fmt", default=None, help="json, or a template with {{.Repository}} {{.Tag}} {{.ID}}.")
@click.option("--quiet", "-q", is_flag=True, help="Only image ids.")
@click.option("--noheading", "-n", is_flag=True)
@click.option("--digests", is_flag=True, help="Show manifest digests.")
@click.option("--all", "-a", "all_", is_flag=True)
@click.option("--no-trunc", is_flag=True)
@click.pass_context
def images(ctx: click.Context, fmt: str | None, quiet: bool, noheading: bool, digests: bool, all_: bool,
           no_trunc: bool) -> None:
    """List images in the local store."""
    from builder.image.imagenames import split_tag
    store = _app(ctx).store
    rows = []
    for rec in store.images():
        _, man = store.manifest_of(rec)
        size = man.config.size + sum(l.size for l in man.layers)
        rows.append((rec, size))
    if fmt == "json":
        click.echo(json.dumps([{"id": r.id.split(":", 1)[1], "names": r.names, "digest": r.manifest_digest,
                                "created": r.created, "size": size, "readonly": False} for r, size in rows],
                              indent=2))
        return
    if quiet:
        for r, _ in rows:
            click.echo(r.id.split(":", 1)[1] if no_trunc else r.short_id)
        return
    lines = []
    for r, size in rows:
        for name in r.names or ["<none>:<none>"]:
            repo, tag, _ = split_tag(name) if name != "<none>:<none>" else ("<none>", "<none>", None)
            lines.append({"Repository": repo, "Tag": tag or "latest", "ID": r.id.split(":", 1)[1] if no_trunc
                          else r.short_id, "Digest": r.manifest_digest, "Created": _ago(r.created),
                          "Size": _human_size(size)})
    if fmt:
        for l in lines:
            out = fmt
            for k, v in l.items():
                out = out.replace("{{." + k + "}}", str(v))
            click.echo(out)
        return
    if not noheading:
        click.echo(f"{'REPOSITORY':<40} {'TAG':<12} " + (f"{'DIGEST':<72} " if digests else "") +
                   f"{'IMAGE ID':<14} {'CREATED':<20} SIZE")
    for l in lines:
        click.echo(f"{l['Repository']:<40} {l['Tag']:<12} " + (f"{l['Digest']:<72} " if digests else "") +
                   f"{l['ID']:<14} {l['Created']:<20} {l['Size']}")


@click.command("inspect")
@click.option("--type", "-t", "kind", type=click.Choice(["image", "manifest", "container"]), default="image")
@click.option("--format", "-f", "fmt", default=None, help="A template such as {{.Digest}}.")
@platform_option
@registry_options
@click.argument("name")
@click.pass_context
def inspect(ctx: click.Context, name: str, kind: str, fmt: str | None, platform: str | None, **kw: Any) -> None:
    """Show the configuration (or manifest) of an image in any location, without pulling it."""
    from builder.image.imagecopy import closing
    from builder.image.oci import Platform, parse_config, parse_manifest
    from builder.image.transports import open_source, parse_location
    app = _app(ctx)
    if kind == "container":
        from builder.workspace.container import ContainerRegistry
        click.echo(json.dumps(ContainerRegistry(app.root).get(name).to_json(), indent=2))
        return
    loc = parse_location(name)
    with closing(open_source(loc, store=app.store, registry=registry_options_from(kw))) as src:
        data, mt, digest, index_digest = src.manifest(Platform.parse(platform) if platform else None)
        if kind == "manifest":
            click.echo(json.dumps(json.loads(data), indent=2))
            return
        man = parse_manifest(data, f"manifest of {name}")
        import io
        buf = io.BytesIO()
        src.write_blob(man.config, buf)
        cfg = parse_config(buf.getvalue(), f"config of {name}")
        names = list(getattr(getattr(src, "rec", None), "names", []) or [])
    out = {"Id": man.config.digest.split(":", 1)[1], "Digest": digest, "IndexDigest": index_digest,
           "Names": names, "MediaType": mt, "Config": cfg.to_json(), "Manifest": json.loads(data),
           "Architecture": cfg.architecture, "Os": cfg.os, "Created": cfg.created,
           "Layers": [l.digest for l in man.layers]}
    if fmt:
        for k, v in out.items():
            fmt = fmt.replace("{{." + k + "}}", v if isinstance(v, str) else json.dumps(v))
        click.echo(fmt)
        return
    click.echo(json.dumps(out, indent=2))


@click.command("tag")
@click.argument("image")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def tag(ctx: click.Context, image: str, names: tuple[str, ...]) -> None:
    """Add NAMES to IMAGE."""
    from builder.scripted import find_local_image
    from builder.errors import ImageNotFound
    from builder.image.imagenames import store_name
    app = _app(ctx)
    rec = find_local_image(app, image)
    if rec is None:
        raise ImageNotFound(f"image {image}: not known in the local store")
    app.store.add_image(rec.manifest_digest, [store_name(n) for n in names])


@click.command("rmi")
@click.option("--force", "-f", is_flag=True, help="Also remove images used by working containers.")
@click.option("--all", "-a", "all_", is_flag=True, help="Remove every image.")
@click.option("--prune", "-p", is_flag=True, help="Remove dangling images.")
@click.argument("names", nargs=-1)
@click.pass_context
def rmi(ctx: click.Context, names: tuple[str, ...], force: bool, all_: bool, prune: bool) -> None:
    """Remove images (a name alone is untagged; the image goes with its last name)."""
    from builder.scripted import find_local_image
    from builder.workspace.container import ContainerRegistry
    from builder.errors import ContainerError, ImageNotFound, UsageError
    from builder.image.imagenames import lookup_candidates
    app = _app(ctx)
    store = app.store
    if not names and not all_ and not prune:
        raise UsageError("rmi: name an image, or use --all or --prune")
    rt = app.runtime()
    with store.lock():
        used = {c.image_id: c.name for c in ContainerRegistry(app.root).all() if c.image_id}
        targets = list(store.images()) if all_ else [r for r in store.images() if not r.names] if prune else []
        for n in names:
            rec = find_local_image(app, n)
            if rec is None:
                raise ImageNotFound(f"image {n}: not known in the local store")
            given = next((c for c in lookup_candidates(n) if c in rec.names), None)
            if given and len(rec.names) > 1 and not force:
                store.untag(given)
                click.echo(f"untagged: {given}")
                continue
            targets.append(rec)
        for rec in targets:
            if rec.id in used and not force:
                raise ContainerError(f"image {rec.names[0] if rec.names else rec.short_id}: in use by working "
                                     f"container {used[rec.id]} (use --force)")
            store.remove_image(rec)
            click.echo(rec.id.split(":", 1)[1])
    from builder.workspace.gc import collect
    collect(store, rt)


@click.command("prune")
@click.option("--all", "-a", "all_", is_flag=True, help="Also remove images without containers using them.")
@click.option("--force", "-f", is_flag=True, hidden=True)
@click.pass_context
def prune(ctx: click.Context, all_: bool, force: bool) -> None:
    """Remove dangling images (no name), the build cache and RUN cache mounts no running build
    uses, and every blob, unpacked layer and snapshot nothing needs; print what was freed."""
    from builder.workspace.container import ContainerRegistry
    from builder.workspace.gc import Freed, collect
    app = _app(ctx)
    store = app.store
    rt = app.runtime()
    freed = Freed()
    with store.lock():
        used = {c.image_id for c in ContainerRegistry(app.root).all() if c.image_id}
        for rec in store.images():
            if rec.id not in used and (not rec.names or all_):
                store.remove_image(rec)
                freed.images += 1
                click.echo(rec.id.split(":", 1)[1])
    click.echo(collect(store, rt, build_cache=True, cache_mounts=True, freed=freed).line())
