"""The ``bale`` command group. Subcommands live in builder/cli/commands/ and are
imported only when invoked (pip's commands_dict), so ``bale --version`` is quick."""
from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from builder import __version__

#: command name -> (module under builder.cli.commands, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "pull": ("images", "pull", "Pull an image from a registry or other transport."),
    "push": ("images", "push", "Push an image to a registry or other transport."),
    "images": ("images", "images", "List images in the local store."),
    "inspect": ("images", "inspect", "Show an image's configuration or manifest."),
    "tag": ("images", "tag", "Add names to an image."),
    "rmi": ("images", "rmi", "Remove images."),
    "prune": ("images", "prune", "Remove unused blobs and dangling images."),
    "login": ("auth", "login", "Log in to a registry."),
    "logout": ("auth", "logout", "Log out of a registry."),
    "info": ("system", "info", "Show what isolation and storage bale will use."),
    "unshare": ("system", "unshare", "Run a command in bale's user namespace."),
    "from": ("containers", "from_", "Create a working container from an image."),
    "run": ("containers", "run", "Run a command in a working container."),
    "copy": ("containers", "copy", "Copy files into a working container."),
    "add": ("containers", "add", "Add files, archives or URLs into a working container."),
    "config": ("containers", "config", "Change a working container's image configuration."),
    "commit": ("containers", "commit", "Commit a working container to an image."),
    "containers": ("containers", "containers", "List working containers."),
    "rm": ("containers", "rm", "Remove working containers."),
    "mount": ("containers", "mount", "Mount a working container's root filesystem."),
    "umount": ("containers", "umount", "Unmount a working container's root filesystem."),
    "bud": ("bud", "bud", "Build an image from a Dockerfile."),
    "build": ("bud", "bud", "Build an image from a Dockerfile (alias of bud)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = COMMANDS.get(name)
        if entry is None:
            return None
        module = importlib.import_module(f"builder.cli.commands.{entry[0]}")
        return getattr(module, entry[1])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bale", message="%(prog)s version %(version)s")
@click.option("--root", envvar="BALE_ROOT", type=click.Path(file_okay=False), default=None,
              help="Store location (default $XDG_DATA_HOME/bale, or /var/lib/bale for root).")
@click.option("--storage-driver", envvar="BALE_STORAGE_DRIVER",
              type=click.Choice(["overlay", "fuse-overlayfs", "native"]), default=None,
              help="Snapshot driver (default: probed).")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warn", "error"]), default="warn",
              show_default=True)
@click.pass_context
def cli(ctx: click.Context, root: str | None, storage_driver: str | None, debug: bool, log_level: str) -> None:
    """bale: build OCI images without a daemon and without root."""
    from builder.cli.context import AppContext
    ctx.obj = AppContext.create(root, storage_driver, debug, log_level)


def main(argv: list[str] | None = None) -> Any:
    from builder.cli.errors import run_cli
    return run_cli(cli, argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
