"""`bale bud` / `bale build`: build an image from a Dockerfile, with buildah's flags."""
from __future__ import annotations

import os
from typing import Any

import click

from builder.cli.options import signing_options, output_options, platform_option, progress_options, registry_options, \
    registry_options_from


def _pull_policy(value: str | None) -> str:
    if value is None:
        return "missing"
    v = value.lower()
    return {"true": "always", "false": "missing", "": "always", "ifmissing": "missing",
            "ifnewer": "newer"}.get(v, v)


@click.command("bud")
@click.option("--file", "-f", "dockerfile", default=None, metavar="PATH",
              help="Dockerfile (default CONTEXT/Dockerfile or Containerfile; - for stdin).")
@click.option("--tag", "-t", "tags", multiple=True, help="Name for the image (repeatable; a transport pushes).")
@click.option("--build-arg", "build_args", multiple=True, metavar="K[=V]")
@click.option("--build-arg-file", "build_arg_files", multiple=True, metavar="FILE")
@click.option("--ignorefile", default=None, metavar="FILE",
              help="Ignore file to use instead of CONTEXT/.containerignore or .dockerignore.")
@click.option("--target", default=None, help="Build this stage (default: the last).")
@click.option("--layers/--no-layers", default=lambda: os.environ.get("BUILDAH_LAYERS", "").lower() in ("1", "true"),
              help="Cache intermediate layers.")
@click.option("--no-cache", is_flag=True, help="Do not use cached layers.")
@click.option("--pull", "pull", default=None, metavar="POLICY", is_flag=False, flag_value="always",
              help="always|missing|never|newer (bare --pull = always).")
@click.option("--pull-always", is_flag=True, hidden=True)
@click.option("--pull-never", is_flag=True, hidden=True)
@click.option("--squash", is_flag=True, help="Squash all new layers into one.")
@click.option("--timestamp", type=click.IntRange(-62135596800, 253402300799), default=None, help="Created time and file mtimes (reproducible builds).")
@click.option("--label", "labels", multiple=True, metavar="K=V")
@click.option("--annotation", "annotations", multiple=True, metavar="K=V")
@click.option("--iidfile", default=None)
@click.option("--digestfile", default=None)
@click.option("--output", "-o", "outputs", multiple=True, metavar="type=TYPE,dest=PATH",
              help="oci, oci-archive, docker-archive, local or tar output (repeatable).")
@click.option("--push", is_flag=True, help="Push to the -t names instead of (only) storing.")
@click.option("--secret", "secrets", multiple=True, metavar="id=ID,src=FILE|env=VAR")
@click.option("--build-context", "build_contexts", multiple=True, metavar="NAME=DIR|docker-image://REF")
@click.option("--network", type=click.Choice(["host", "none", "default"]), default="host", show_default=True)
@click.option("--isolation", type=click.Choice(["rootless", "chroot", "oci"]), default=None,
              envvar="BUILDAH_ISOLATION")
@click.option("--runtime", default=None, envvar="BALE_RUNTIME", help="OCI runtime for --isolation oci.")
@click.option("--rm/--no-rm", "remove_intermediate", default=True, help="Remove intermediate containers.")
@click.option("--force-rm", is_flag=True, hidden=True)
@click.option("--jobs", type=int, default=2, show_default=True, help="Stages built in parallel.")
@click.option("--disable-compression", "-D", is_flag=True)
@output_options(short_format=False)
@progress_options
@platform_option
@registry_options
@signing_options
@click.argument("context", required=False, default=".")
@click.pass_context
def bud(ctx: click.Context, context: str, **kw: Any) -> None:
    """Build an image from a Dockerfile in CONTEXT (a directory, a tarball, - or a git URL)."""
    from builder.build import options as bo
    from builder.build.builder import build
    from builder.cli.context import workspace
    regopts = registry_options_from(kw)
    pull = _pull_policy(kw["pull"])
    if kw["pull_always"]:
        pull = "always"
    if kw["pull_never"]:
        pull = "never"
    compression = "none" if kw["disable_compression"] else (kw["compression"] or "gzip")
    tags = list(kw["tags"])
    outputs = [bo.parse_output(o) for o in kw["outputs"]]
    opts = bo.BuildOptions(
        context=context, dockerfile=kw["dockerfile"], tags=tags,
        build_args=bo.parse_build_args(kw["build_args"], kw["build_arg_files"]), target=kw["target"],
        layers=kw["layers"], no_cache=kw["no_cache"], pull=pull, squash=kw["squash"],
        timestamp=kw["timestamp"], image_format=kw["image_format"] or "oci", compression=compression,
        compression_level=kw["compression_level"], labels=bo.parse_kv_list(kw["labels"], "--label"),
        annotations=bo.parse_kv_list(kw["annotations"], "--annotation"), iidfile=kw["iidfile"],
        digestfile=kw["digestfile"], outputs=outputs, push=kw["push"],
        secrets={s.id: s for s in map(bo.parse_secret, kw["secrets"])},
        build_contexts=bo.parse_build_contexts(kw["build_contexts"]), platform=kw["platform"],
        network="host" if kw["network"] == "default" else kw["network"], quiet=kw["quiet"],
        progress=kw["progress"], registry=regopts, isolation=kw["isolation"],
        remove_intermediate=kw["remove_intermediate"] or kw["force_rm"], jobs=max(1, kw["jobs"]),
        ignorefile=kw["ignorefile"])
    result = build(workspace(ctx, oci_runtime=kw["runtime"]), opts)
    click.echo(result.image_id.split(":", 1)[1] if result.image_id else "")
