"""The ``bale`` click group: global options, and subcommands looked up in
builder.cli.main.COMMANDS and imported only when invoked."""
from __future__ import annotations

import importlib

import click

from builder import __version__
from builder.cli.main import COMMANDS


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = COMMANDS.get(name)
        if entry is None:
            return None
        module = importlib.import_module(f"builder.cli.commands.{entry[0]}")
        command: click.Command = getattr(module, entry[1])
        return command

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
