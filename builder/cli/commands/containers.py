"""Scripted-build verbs with buildah's names and flags: from, run, copy, add,
config, commit, containers, rm, mount, umount."""
from __future__ import annotations

import json
import sys
from typing import Any

import click

from builder.cli.options import output_options, platform_option, registry_options, registry_options_from


def _app(ctx: click.Context, /, isolation: str | None = None) -> Any:
    """The command's Workspace (global flags, plus --isolation and --runtime where taken)."""
    from builder.cli.context import workspace
    return workspace(ctx, isolation=isolation)


def _isolation(f: Any) -> Any:
    """--isolation, and --runtime for the oci isolation (runc, crun or a path)."""
    f = click.option("--runtime", default=None, envvar="BALE_RUNTIME", callback=_set_runtime, expose_value=False,
                     help="OCI runtime for --isolation oci (default runc, then crun).")(f)
    return click.option("--isolation", type=click.Choice(["rootless", "chroot", "oci", "ptrace"]), default=None,
                        envvar="BUILDAH_ISOLATION", help="How RUN is isolated (default: probed).")(f)


def _set_runtime(ctx: click.Context, /, param: Any, value: str | None) -> None:
    if value:
        ctx.meta["bale.runtime"] = value


@click.command("from")
@click.option("--name", default=None, help="Name of the working container.")
@click.option("--pull", default="missing", metavar="POLICY",
              help="always|missing|never|newer (true = always, false = missing).")
@click.option("--quiet", "-q", is_flag=True)
@platform_option
@registry_options
@_isolation
@click.argument("image")
@click.pass_context
def from_(ctx: click.Context, /, image: str, name: str | None, pull: str, quiet: bool, platform: str | None,
          isolation: str | None, **kw: Any) -> None:
    """Create a working container from IMAGE (or `scratch`); prints its name."""
    from builder import scripted as api
    from builder.options import FromOptions
    opts = FromOptions(name=name, pull=pull, platform=platform, registry=registry_options_from(kw), quiet=quiet)
    state = api.from_image(_app(ctx, isolation), image, opts)
    click.echo(state.name)


@click.command("run", context_settings={"ignore_unknown_options": False})
@click.option("--env", "-e", "env", multiple=True, metavar="K=V", help="Extra environment for the command.")
@click.option("--workingdir", default=None, help="Working directory for the command.")
@click.option("--user", default=None, help="USER[:GROUP] to run as.")
@click.option("--network", "--net", "network", type=click.Choice(["host", "none"]), default="host",
              show_default=True)
@click.option("--hostname", default=None)
@click.option("--volume", "-v", "volumes", multiple=True, metavar="SRC:DST[:ro]", help="Bind mount into the command.")
@click.option("--mount", "mounts", multiple=True, metavar="type=bind|tmpfs,...", help="Mount into the command.")
@click.option("--terminal", "-t", is_flag=True, help="Allocate no pty (accepted for buildah compatibility).")
@_isolation
@click.argument("container")
@click.argument("command", nargs=-1, required=True)
@click.pass_context
def run(ctx: click.Context, /, container: str, command: tuple[str, ...], env: tuple[str, ...], workingdir: str | None,
        user: str | None, network: str, hostname: str | None, volumes: tuple[str, ...], mounts: tuple[str, ...],
        terminal: bool, isolation: str | None) -> None:
    """Run COMMAND in CONTAINER (put `--` before the command)."""
    from builder import scripted as api
    from builder.options import RunOptions
    opts = RunOptions(env=env, workdir=workingdir, user=user, network=network, hostname=hostname,
                      volumes=volumes, mounts=mounts)
    status = api.run_in(_app(ctx, isolation), container, list(command), opts)
    sys.exit(status)


def _copy_options(f: Any) -> Any:
    f = click.option("--link", is_flag=True, help="Accepted (the copy becomes part of the next commit's layer "
                     "either way).")(f)
    f = click.option("--parents", is_flag=True, help="Keep each source's directories under DEST.")(f)
    f = click.option("--exclude", "excludes", multiple=True, metavar="PATTERN", help="Leave out matching paths.")(f)
    f = click.option("--quiet", "-q", is_flag=True)(f)
    f = click.option("--contextdir", default=None, type=click.Path(file_okay=False),
                     help="Directory that sources must lie in (default: the current directory).")(f)
    f = click.option("--from", "from_", default=None, help="Copy from this container or image instead.")(f)
    f = click.option("--chmod", default=None, metavar="MODE", help="Set the mode of copied files.")(f)
    f = click.option("--chown", default=None, metavar="USER[:GROUP]", help="Set the owner of copied files.")(f)
    return f


def _split_sources(paths: tuple[str, ...]) -> tuple[list[str], str | None]:
    if not paths:
        raise click.UsageError("expected at least one source")
    if len(paths) == 1:
        return [paths[0]], None
    return list(paths[:-1]), paths[-1]


@click.command("copy")
@_copy_options
@click.argument("container")
@click.argument("paths", nargs=-1, required=True)
@click.pass_context
def copy(ctx: click.Context, /, container: str, paths: tuple[str, ...], chown: str | None, chmod: str | None,
         from_: str | None, contextdir: str | None, quiet: bool, excludes: tuple[str, ...], parents: bool,
         link: bool) -> None:
    """Copy SRC... to DEST in CONTAINER (DEST defaults to the working directory)."""
    from builder import scripted as api
    from builder.options import CopyOptions
    sources, dest = _split_sources(paths)
    _no_from_with(from_, excludes, parents)
    api.copy_into(_app(ctx), container, sources, dest, CopyOptions(
        chown=chown, chmod=chmod, copy_from=from_, contextdir=contextdir, add=False, quiet=quiet,
        excludes=excludes, parents=parents))


def _no_from_with(from_: str | None, excludes: tuple[str, ...], parents: bool) -> None:
    if from_ and (excludes or parents):
        raise click.UsageError("--exclude and --parents apply to sources from the context, not --from")


@click.command("add")
@_copy_options
@click.option("--checksum", default=None, help="Expected digest of a URL source.")
@click.argument("container")
@click.argument("paths", nargs=-1, required=True)
@click.pass_context
def add(ctx: click.Context, /, container: str, paths: tuple[str, ...], chown: str | None, chmod: str | None,
        from_: str | None, contextdir: str | None, quiet: bool, checksum: str | None, excludes: tuple[str, ...],
        parents: bool, link: bool) -> None:
    """Like copy, but local archives are extracted and URLs are fetched."""
    from builder import scripted as api
    from builder.options import CopyOptions
    sources, dest = _split_sources(paths)
    _no_from_with(from_, excludes, parents)
    api.copy_into(_app(ctx), container, sources, dest, CopyOptions(
        chown=chown, chmod=chmod, copy_from=from_, contextdir=contextdir, add=True, quiet=quiet,
        checksum=checksum, excludes=excludes, parents=parents))


@click.command("config")
@click.option("--cmd", default=None, help="Default command (JSON array or shell string).")
@click.option("--entrypoint", default=None, help="Entrypoint (JSON array or shell string).")
@click.option("--env", "-e", "env", multiple=True, metavar="K=V", help="Set (K=V) or remove (K-) a variable.")
@click.option("--workingdir", default=None)
@click.option("--user", "-u", default=None)
@click.option("--label", "-l", "labels", multiple=True, metavar="K=V", help="Set (K=V) or remove (K-) a label.")
@click.option("--annotation", "-a", "annotations", multiple=True, metavar="K=V")
@click.option("--port", "-p", "ports", multiple=True, metavar="PORT[/PROTO]", help="Expose a port (PORT- removes).")
@click.option("--volume", "-v", "volumes", multiple=True, metavar="PATH", help="Add a volume (PATH- removes).")
@click.option("--stop-signal", default=None)
@click.option("--healthcheck", default=None, metavar="CMD", help="Healthcheck command, or NONE.")
@click.option("--healthcheck-interval", default=None)
@click.option("--healthcheck-timeout", default=None)
@click.option("--healthcheck-start-period", default=None)
@click.option("--healthcheck-start-interval", default=None)
@click.option("--healthcheck-retries", type=int, default=None)
@click.option("--shell", default=None, help="Shell for shell-form commands (JSON array).")
@click.option("--onbuild", multiple=True, help="Add an ONBUILD trigger.")
@click.option("--author", default=None)
@click.option("--created-by", default=None, help="History text for the next commit.")
@click.option("--comment", default=None)
@click.option("--history-comment", default=None)
@click.option("--arch", default=None)
@click.option("--os", "os_", default=None)
@click.option("--variant", default=None)
@click.option("--hostname", default=None)
@click.option("--domainname", default=None)
@click.argument("container")
@click.pass_context
def config(ctx: click.Context, /, container: str, **opts: Any) -> None:
    """Change the image configuration of CONTAINER."""
    from builder import scripted as api
    from builder.options import ConfigOptions
    opts["os"] = opts.pop("os_")
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, tuple) else v for k, v in opts.items()}
    api.configure(_app(ctx), container, ConfigOptions(**fields))


@click.command("commit")
@click.option("--squash", is_flag=True, help="Merge all layers into one.")
@click.option("--timestamp", type=click.IntRange(-62135596800, 253402300799), default=None, help="Created time and file mtimes (seconds since epoch).")
@click.option("--rm", "remove", is_flag=True, help="Remove the working container after committing.")
@click.option("--iidfile", default=None, help="Write the image id to this file.")
@click.option("--digestfile", default=None, help="Write the manifest digest to this file.")
@click.option("--disable-compression", "-D", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
@output_options
@registry_options
@click.argument("container")
@click.argument("image", required=False)
@click.pass_context
def commit(ctx: click.Context, /, container: str, image: str | None, squash: bool, timestamp: int | None,
           remove: bool, iidfile: str | None, digestfile: str | None, disable_compression: bool, quiet: bool,
           image_format: str | None, compression: str | None, compression_level: int | None, **kw: Any) -> None:
    """Commit CONTAINER to IMAGE (a name in the store, or any transport)."""
    from builder import scripted as api
    from builder.options import CommitOptions
    opts = CommitOptions(squash=squash, timestamp=timestamp, image_format=image_format or "oci",
                         compression="none" if disable_compression else (compression or "gzip"),
                         compression_level=compression_level, registry=registry_options_from(kw), quiet=quiet)
    rec = api.commit(_app(ctx), container, image, opts)
    if iidfile:
        with open(iidfile, "w") as fh:
            fh.write(rec.id)
    if digestfile:
        with open(digestfile, "w") as fh:
            fh.write(rec.manifest_digest)
    click.echo(rec.id.split(":", 1)[1])
    if remove:
        api.remove_containers(_app(ctx), [container])


@click.command("containers")
@click.option("--format", "fmt", default=None, help="json, or a Go-like template with {{.Name}} etc.")
@click.option("--quiet", "-q", is_flag=True)
@click.option("--noheading", "-n", is_flag=True)
@click.option("--all", "-a", "all_", is_flag=True, help="Accepted for buildah compatibility.")
@click.pass_context
def containers(ctx: click.Context, /, fmt: str | None, quiet: bool, noheading: bool, all_: bool) -> None:
    """List working containers."""
    from builder.workspace.container import ContainerRegistry
    states = ContainerRegistry(_app(ctx).root).all()
    if fmt == "json":
        click.echo(json.dumps([{"id": s.id, "name": s.name, "image": s.image, "imageid": s.image_id,
                                "driver": s.driver, "isolation": s.isolation} for s in states], indent=2))
        return
    if quiet:
        for s in states:
            click.echo(s.id[:12])
        return
    if fmt:
        for s in states:
            click.echo(fmt.replace("{{.Name}}", s.name).replace("{{.ID}}", s.id[:12])
                       .replace("{{.ImageName}}", s.image).replace("{{.ContainerName}}", s.name))
        return
    if not noheading:
        click.echo(f"{'CONTAINER ID':<14}{'IMAGE ID':<14}{'IMAGE NAME':<40}CONTAINER NAME")
    for s in states:
        iid = s.image_id.split(":", 1)[1][:12] if s.image_id else ""
        click.echo(f"{s.id[:12]:<14}{iid:<14}{s.image:<40}{s.name}")


@click.command("rm")
@click.option("--all", "-a", "all_", is_flag=True, help="Remove every working container.")
@click.argument("names", nargs=-1)
@click.pass_context
def rm(ctx: click.Context, /, names: tuple[str, ...], all_: bool) -> None:
    """Remove working containers and their snapshots."""
    from builder import scripted as api
    from builder.workspace.container import ContainerRegistry
    if all_:
        names = tuple(ContainerRegistry(_app(ctx).root).names())
    elif not names:
        raise click.UsageError("name a container, or use --all")
    for removed in api.remove_containers(_app(ctx), list(names)):
        click.echo(removed)


@click.command("mount")
@click.argument("names", nargs=-1)
@click.pass_context
def mount(ctx: click.Context, /, names: tuple[str, ...]) -> None:
    """Mount CONTAINER's root filesystem and print where (inside `bale unshare`)."""
    from builder import scripted as api
    for name, path in api.mount(_app(ctx), list(names)):
        click.echo(path if len(names) == 1 else f"{name} {path}")


@click.command("umount")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def umount(ctx: click.Context, /, names: tuple[str, ...]) -> None:
    """Unmount CONTAINER's root filesystem."""
    from builder import scripted as api
    for name in names:
        api.umount(_app(ctx), name)
