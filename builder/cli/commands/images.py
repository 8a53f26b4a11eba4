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
def pull(ctx: click.Context, /, source: str, quiet: bool, progress: str, platform: str | None, all_tags: bool,
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
@click.option("--iidfile", default=None, help="Write the pushed image's id here.")
@click.option("--all", "all_", is_flag=True, help="IMAGE is a manifest list: push its images too (the default "
              "for a list).")
@click.option("--remove-signatures", is_flag=True, hidden=True)
@output_options
@progress_options
@registry_options
@signing_options
@click.argument("image")
@click.argument("destination", required=False)
@click.pass_context
def push(ctx: click.Context, /, image: str, destination: str | None, digestfile: str | None, iidfile: str | None,
         all_: bool, quiet: bool, progress: str, image_format: str | None, compression: str | None,
         compression_level: int | None, remove_signatures: bool, **kw: Any) -> None:
    """Copy IMAGE from the store to DESTINATION (default: docker://IMAGE). A manifest list
    goes with its images, as ``bale manifest push --all``."""
    from builder.cli.progress import make_progress
    from builder.image import manifestlist as ml
    from builder.image.pull import push as push_op
    from builder.options import PushOptions
    from builder.scripted import find_local_image
    app = _app(ctx)
    lst = ml.find_list(app.store, image)
    if lst is not None and (all_ or find_local_image(app, image) is None):
        digest = ml.push_list(app, lst, destination or image, all_images=True, image_format=image_format,
                              registry=registry_options_from(kw), progress=make_progress(quiet, progress))
        image_id = lst.digest
    else:
        opts = PushOptions(registry=registry_options_from(kw), image_format=image_format, quiet=quiet)
        result = push_op(app, image, destination, opts, progress=make_progress(quiet, progress))
        digest = result.manifest_digest
        image_id = "sha256:" + __import__("hashlib").sha256(result.config).hexdigest()
    if digestfile:
        with open(digestfile, "w") as fh:
            fh.write(digest)
    if iidfile:
        with open(iidfile, "w") as fh:
            fh.write(image_id)
    if not quiet:
        click.echo(digest)


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


def _image_filter(text: str) -> Any:
    """One ``--filter KEY=VALUE`` of buildah images (dangling, label, reference, before,
    since/after, id, digest, readonly) as a predicate over (record, store)."""
    import fnmatch
    from builder.errors import UsageError
    key, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"invalid --filter {text!r}: expected KEY=VALUE")
    if key == "dangling":
        want = value.lower() in ("true", "1")
        return lambda r, store: (not r.names) == want
    if key == "readonly":
        want = value.lower() in ("true", "1")
        return lambda r, store: not want  # nothing in bale's store is read-only
    if key == "reference":
        pat = value if ":" in value.rsplit("/", 1)[-1] or "*" in value else value + "*"
        return lambda r, store: any(fnmatch.fnmatchcase(n, pat) or fnmatch.fnmatchcase(n.split("/", 1)[-1], pat)
                                    or fnmatch.fnmatchcase(n.rsplit("/", 1)[-1], pat) for n in r.names)
    if key == "id":
        return lambda r, store: r.id.split(":", 1)[1].startswith(value.removeprefix("sha256:"))
    if key == "digest":
        return lambda r, store: r.manifest_digest == value or r.manifest_digest.startswith(value)
    if key == "label":
        lk, has_v, lv = value.partition("=")

        def label(r: Any, store: Any) -> bool:
            _, man = store.manifest_of(r)
            labels = (json.loads(store.read_blob(man.config.digest)).get("config") or {}).get("Labels") or {}
            return bool(lk in labels and (not has_v or labels[lk] == lv))
        return label
    if key in ("before", "since", "after"):
        seen: list[float] = []

        def when(r: Any, store: Any) -> bool:
            if not seen:
                ref = store.find_image(value)
                if ref is None:
                    from builder.errors import ImageNotFound
                    raise ImageNotFound(f"--filter {text}: image {value} not known in the local store")
                seen.append(float(ref.created))
            return bool(r.created < seen[0] if key == "before" else r.created > seen[0])
        return when
    raise UsageError(f"invalid --filter {text!r}: unknown filter {key!r} (dangling, label, reference, before, "
                     "since, id, digest, readonly)")


@click.command("images")
@click.option("--format", "fmt", default=None, help="json, or a Go template with {{.Repository}} {{.Tag}} {{.ID}}.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="dangling=BOOL, label=K[=V], reference=PATTERN, before=IMAGE, since=IMAGE, id=ID, digest=D.")
@click.option("--quiet", "-q", is_flag=True, help="Only image ids.")
@click.option("--noheading", "-n", is_flag=True)
@click.option("--digests", is_flag=True, help="Show manifest digests.")
@click.option("--all", "-a", "all_", is_flag=True)
@click.option("--no-trunc", "--notruncate", "no_trunc", is_flag=True)
@click.argument("image", required=False)
@click.pass_context
def images(ctx: click.Context, /, image: str | None, fmt: str | None, as_json: bool, filters: tuple[str, ...],
           quiet: bool, noheading: bool, digests: bool, all_: bool, no_trunc: bool) -> None:
    """List images in the local store (only IMAGE's, when given)."""
    from builder.cli.gotemplate import render
    from builder.image.imagenames import split_tag
    store = _app(ctx).store
    preds = [_image_filter(f) for f in filters]
    records = store.images()
    if image:
        from builder.scripted import find_local_image
        found = find_local_image(_app(ctx), image)
        if found is None:
            from builder.errors import ImageNotFound
            raise ImageNotFound(f"image {image}: not known in the local store")
        records = [r for r in records if r.manifest_digest == found.manifest_digest]
    rows = []
    for rec in records:
        if not all(p(rec, store) for p in preds):
            continue
        _, man = store.manifest_of(rec)
        size = man.config.size + sum(l.size for l in man.layers)
        rows.append((rec, size))
    if fmt == "json" or as_json:
        click.echo(json.dumps([{"id": r.id.split(":", 1)[1], "names": r.names, "digest": r.manifest_digest,
                                "created": r.created, "createdat": time.strftime(
                                    "%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(r.created)),
                                "size": size, "readonly": False} for r, size in rows], indent=2))
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
                          "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(r.created)),
                          "Size": _human_size(size), "Names": r.names, "ReadOnly": False, "Name": name})
    if fmt:
        fmt = fmt.removeprefix("table ").replace("\\t", "\t")
        for l in lines:
            click.echo(render(fmt, l))
        return
    if not noheading:
        click.echo(f"{'REPOSITORY':<40} {'TAG':<12} " + (f"{'DIGEST':<72} " if digests else "") +
                   f"{'IMAGE ID':<14} {'CREATED':<20} SIZE")
    for l in lines:
        click.echo(f"{l['Repository']:<40} {l['Tag']:<12} " + (f"{l['Digest']:<72} " if digests else "") +
                   f"{l['ID']:<14} {l['Created']:<20} {l['Size']}")


def _docker_config(oci: dict[str, Any]) -> dict[str, Any]:
    """The Docker schema2 form of an OCI config (buildah inspect's ``Docker`` field): the same
    keys, plus ``container_config`` as buildah fills it."""
    out = dict(oci)
    out.setdefault("config", {})
    out["container_config"] = dict(out.get("config") or {})
    return out


def inspect_data(name: str, digest: str, index_digest: str | None, mt: str, manifest: bytes, config: Any,
                 names: list[str]) -> dict[str, Any]:
    """What ``bale inspect`` prints for an image: buildah's BuilderInfo fields (Type, FromImage,
    FromImageID, FromImageDigest, OCIv1, Docker, ImageAnnotations, History; Config and Manifest
    are the parsed documents, where buildah has them as JSON strings) plus bale's own (Id, Digest,
    IndexDigest, Names, MediaType, Architecture, Os, Created, Labels, Layers)."""
    cfg_json = config.to_json()
    man = json.loads(manifest)
    image_id = (man.get("config") or {}).get("digest", "")
    return {
        "Type": "buildah 0.0.1", "FromImage": names[0] if names else name, "FromImageID": image_id.split(":")[-1],
        "FromImageDigest": digest, "Config": cfg_json, "Manifest": man,
        "OCIv1": cfg_json, "Docker": _docker_config(cfg_json), "ImageAnnotations": man.get("annotations") or {},
        "ImageCreatedBy": "", "History": cfg_json.get("history") or [],
        "Id": image_id.split(":")[-1], "Digest": digest, "IndexDigest": index_digest, "Names": names,
        "MediaType": mt, "Architecture": config.architecture, "Os": config.os, "Created": config.created,
        "Labels": (cfg_json.get("config") or {}).get("Labels") or {},
        "Layers": [l["digest"] for l in man.get("layers") or []],
    }


@click.command("inspect")
@click.option("--type", "-t", "kind", type=click.Choice(["image", "manifest", "container"]), default="image")
@click.option("--format", "-f", "fmt", default=None,
              help="A Go template: {{.Digest}}, {{.OCIv1.Architecture}}, {{json .Docker.config}}, "
                   "{{index .Labels \"k\"}} ...")
@platform_option
@registry_options
@click.argument("name")
@click.pass_context
def inspect(ctx: click.Context, /, name: str, kind: str, fmt: str | None, platform: str | None, **kw: Any) -> None:
    """Show the configuration (or manifest) of an image in any location, without pulling it."""
    from builder.cli.gotemplate import render
    from builder.image.imagecopy import closing
    from builder.image.oci import Platform, parse_config, parse_manifest
    from builder.image.transports import open_source, parse_location
    app = _app(ctx)
    if kind == "container":
        from builder.workspace.container import ContainerRegistry
        data = ContainerRegistry(app.root).get(name).to_json()
        click.echo(render(fmt, data) if fmt else json.dumps(data, indent=2))
        return
    if kind == "manifest" and parse_location(name).kind == "store":
        from builder.image import manifestlist
        lst = manifestlist.find_list(app.store, name)
        if lst is not None:
            doc = json.loads(app.store.read_blob(lst.digest))
            click.echo(render(fmt, doc) if fmt else json.dumps(doc, indent=4))
            return
    loc = parse_location(name)
    with closing(open_source(loc, store=app.store, registry=registry_options_from(kw))) as src:
        data, mt, digest, index_digest = src.manifest(Platform.parse(platform) if platform else None)
        if kind == "manifest":
            doc = json.loads(data)
            click.echo(render(fmt, doc) if fmt else json.dumps(doc, indent=2))
            return
        man = parse_manifest(data, f"manifest of {name}")
        import io
        buf = io.BytesIO()
        src.write_blob(man.config, buf)
        cfg = parse_config(buf.getvalue(), f"config of {name}")
        names = list(getattr(getattr(src, "rec", None), "names", []) or [])
    out = inspect_data(name, digest, index_digest, mt, data, cfg, names)
    if fmt:
        click.echo(render(fmt, out))
        return
    click.echo(json.dumps(out, indent=2))


@click.command("tag")
@click.argument("image")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def tag(ctx: click.Context, /, image: str, names: tuple[str, ...]) -> None:
    """Add NAMES to IMAGE."""
    from builder.scripted import find_local_image
    from builder.errors import ImageNotFound
    from builder.image.imagenames import store_name
    app = _app(ctx)
    rec = find_local_image(app, image)
    if rec is None:
        raise ImageNotFound(f"image {image}: not known in the local store")
    app.store.add_image(rec.manifest_digest, [store_name(n) for n in names])


def _runtime_or_none(app: Any) -> Any:
    """The runtime to remove layer files in (owned by subordinate ids); None where this host gives
    no isolation at all: images and blobs still go, files bale cannot remove stay for later."""
    from builder.errors import BaleError
    try:
        return app.runtime()
    except BaleError:
        return None


@click.command("rmi")
@click.option("--force", "-f", is_flag=True, help="Also remove images used by working containers.")
@click.option("--all", "-a", "all_", is_flag=True, help="Remove every image.")
@click.option("--prune", "-p", is_flag=True, help="Remove dangling images.")
@click.argument("names", nargs=-1)
@click.pass_context
def rmi(ctx: click.Context, /, names: tuple[str, ...], force: bool, all_: bool, prune: bool) -> None:
    """Remove images (a name alone is untagged; the image goes with its last name)."""
    from builder.scripted import find_local_image
    from builder.workspace.container import ContainerRegistry
    from builder.errors import ContainerError, ImageNotFound, UsageError
    from builder.image.imagenames import lookup_candidates
    app = _app(ctx)
    store = app.store
    if not names and not all_ and not prune:
        raise UsageError("rmi: name an image, or use --all or --prune")
    rt = _runtime_or_none(app)
    with store.lock():
        used = {c.image_id: c.name for c in ContainerRegistry(app.root).all() if c.image_id}
        targets = list(store.images()) if all_ else [r for r in store.images() if not r.names] if prune else []
        for n in names:
            rec = find_local_image(app, n)
            if rec is None:
                from builder.image import manifestlist as ml
                if ml.find_list(store, n) is not None:  # buildah rmi removes manifest lists too
                    click.echo(ml.remove(store, n).digest.split(":", 1)[1])
                    continue
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
def prune(ctx: click.Context, /, all_: bool, force: bool) -> None:
    """Remove dangling images (no name), the build cache and RUN cache mounts no running build
    uses, and every blob, unpacked layer and snapshot nothing needs; print what was freed."""
    from builder.workspace.container import ContainerRegistry
    from builder.workspace.gc import Freed, collect
    app = _app(ctx)
    store = app.store
    rt = _runtime_or_none(app)
    freed = Freed()
    with store.lock():
        used = {c.image_id for c in ContainerRegistry(app.root).all() if c.image_id}
        for rec in store.images():
            if rec.id not in used and (not rec.names or all_):
                store.remove_image(rec)
                freed.images += 1
                click.echo(rec.id.split(":", 1)[1])
    click.echo(collect(store, rt, build_cache=True, cache_mounts=True, freed=freed).line())
