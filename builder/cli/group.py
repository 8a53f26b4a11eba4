"""The ``bale`` click group: global options, and subcommands looked up in
builder.cli.main.COMMANDS and imported only when invoked."""
from __future__ import annotations

import importlib

import logging

import click

from builder import __version__
from builder.cli.gobool import GoBoolGroup
from builder.cli.main import COMMANDS


class LazyGroup(GoBoolGroup):
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
@click.option("--storage-driver", envvar=["BALE_STORAGE_DRIVER", "STORAGE_DRIVER"],
              type=click.Choice(["overlay", "fuse-overlayfs", "native", "vfs"]), default=None,
              help="Snapshot driver (default: probed; vfs is bale's copy-based native driver). Env: STORAGE_DRIVER.")
@click.option("--runroot", default=None, type=click.Path(file_okay=False),
              help="Accepted for buildah compatibility; bale keeps no run-time state outside --root.")
@click.option("--storage-opt", "storage_opts", multiple=True, metavar="KEY=VALUE",
              help="Accepted for buildah compatibility; bale's drivers take no options.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("--log-level", type=click.Choice(["trace", "debug", "info", "warn", "warning", "error", "fatal",
                                                "panic"]), default="warn", show_default=True)
@click.pass_context
def cli(ctx: click.Context, root: str | None, storage_driver: str | None, runroot: str | None,
        storage_opts: tuple[str, ...], debug: bool, log_level: str) -> None:
    """bale: build OCI images without a daemon and without root."""
    from builder.cli.context import AppContext
    level = {"trace": "debug", "warning": "warn", "fatal": "error", "panic": "error"}.get(log_level, log_level)
    log = logging.getLogger("bale")
    if storage_driver == "vfs":  # buildah's name of the copy-based driver (Tekton: STORAGE_DRIVER=vfs)
        storage_driver = "native"
    ctx.obj = AppContext.create(root, storage_driver, debug, level)
    if runroot:
        log.info("--runroot %s: ignored (bale keeps no run-time state outside --root)", runroot)
    for opt in storage_opts:
        log.info("--storage-opt %s: ignored (bale's snapshot drivers take no options)", opt)
