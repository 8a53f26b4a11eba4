"""`bale info` (what was probed and what will be used) and `bale unshare`."""
from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

import click


@click.command("info")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--reprobe", is_flag=True, help="Probe again instead of using the cached result.")
@click.pass_context
def info(ctx: click.Context, /, fmt: str, reprobe: bool) -> None:
    """Show the host, the id mapping, and the isolation and storage driver bale will use."""
    from dataclasses import asdict
    from builder.sandbox.idmap import default_idmap
    from builder.errors import UsageError
    from builder.sandbox.probe import choose, probe, refusals
    app = ctx.find_root().obj
    caps = probe(app.root, use_cache=not reprobe)
    try:
        isolation, driver, notice = choose(caps, None, app.storage_driver)
    except UsageError as exc:  # a restricted pod: say what is refused instead of failing
        isolation, driver, notice = "none", "none", str(exc)
    idmap = None if os.geteuid() == 0 else default_idmap()
    data: dict[str, Any] = {
        "host": {"kernel": platform.release(), "arch": platform.machine(), "uid": os.getuid(),
                 "python": platform.python_version()},
        "idmap": {"uids": [list(m.__dict__.values()) for m in idmap.uids],
                  "gids": [list(m.__dict__.values()) for m in idmap.gids]} if idmap else "none (running as root)",
        "probe": asdict(caps),
        "isolation": isolation, "storage_driver": driver, "store": str(app.root), "notice": notice,
        "refused": refusals(caps),
    }
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"kernel:          {data['host']['kernel']} ({data['host']['arch']})")
    click.echo(f"uid:             {data['host']['uid']}")
    mapping = data["idmap"] if isinstance(data["idmap"], str) else \
        ", ".join(f"{c}->{h} ({n})" for c, h, n in data["idmap"]["uids"])
    click.echo(f"id mapping:      {mapping}")
    click.echo(f"user namespaces: {'yes' if caps.userns else 'no'}"
               + (f" ({caps.userns_error})" if caps.userns_error else ""))
    click.echo(f"mounts:          {'yes' if caps.mounts else 'no'}"
               + (f" ({caps.mounts_error})" if caps.mounts_error else ""))
    click.echo(f"overlay:         {'yes' if caps.overlay else 'no'}"
               + (f" ({caps.overlay_error})" if caps.overlay_error and caps.mounts else ""))
    click.echo(f"fuse-overlayfs:  {'yes' if caps.fuse_overlayfs else 'no'}")
    proc = "yes" if caps.fresh_proc else ("no (RUN gets a minimal /proc)" if caps.mounts else "no (chroot: none)")
    click.echo(f"fresh /proc:     {proc}")
    click.echo(f"isolation:       {isolation}")
    click.echo(f"storage driver:  {driver}")
    click.echo(f"store:           {app.root}")
    for item in refusals(caps):
        click.echo(f"refused:         {item}")
    if notice:
        click.echo(f"notice:          {notice}")


def _exec_in_ns(argv: list[str], env: dict[str, str]) -> int:
    import subprocess
    return subprocess.call(argv, env=env)


@click.command("unshare", context_settings={"ignore_unknown_options": True})
@click.option("--mount", "-m", "mounts", multiple=True, metavar="[VAR=]CONTAINER",
              help="Mount a working container and put its path in $VAR (default $CONTAINER_NAME_mount... as buildah).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def unshare(ctx: click.Context, /, mounts: tuple[str, ...], command: tuple[str, ...]) -> None:
    """Run COMMAND (default $SHELL) as root in bale's user namespace, like `buildah unshare`."""
    from builder.sandbox.userns import UserNamespace
    from builder.workspace.snapshots import SnapshotRootfs
    from builder.workspace.container import ContainerRegistry
    app = ctx.find_root().obj
    argv = list(command) or [os.environ.get("SHELL", "/bin/sh")]
    env = dict(os.environ, BALE_UNSHARED="1", _CONTAINERS_USERNS_CONFIGURED="1", BALE_ROOT=str(app.root))
    reg = ContainerRegistry(app.root)
    targets = []
    for item in mounts:
        var, _, name = item.rpartition("=")
        state = reg.get(name)
        targets.append((var or name.replace("-", "_") + "_mount" if not var else var, state))

    def body() -> int:
        for var, state in targets:
            env[var] = str(SnapshotRootfs(str(app.root / "snapshots"), state.driver, state.key).setup())
        return _exec_in_ns(argv, env)
    sys.exit(UserNamespace().call(body))


@click.command("version")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def version(as_json: bool) -> None:
    """Show bale's version and the specifications it writes (as `buildah version`)."""
    from builder import __version__
    from builder.image.oci import Platform
    data = {"version": __version__, "pythonVersion": platform.python_version(), "imageSpec": "1.1.0",
            "runtimeSpec": "1.0.2", "osArch": str(Platform.host()), "buildPlatform": str(Platform.host())}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for label, key in (("Version", "version"), ("Python Version", "pythonVersion"), ("Image Spec", "imageSpec"),
                       ("Runtime Spec", "runtimeSpec"), ("OS/Arch", "osArch"), ("BuildPlatform", "buildPlatform")):
        click.echo(f"{label + ':':<17}{data[key]}")
