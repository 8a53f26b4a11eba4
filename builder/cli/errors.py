"""The one funnel from exceptions to exit codes: one line on stderr, no traceback
unless --debug. 1 = the operation failed, 2 = usage error, 130/143 = interrupted."""
from __future__ import annotations

import os
import sys
from typing import Any

import click


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("BALE_DEBUG") == "1"


def describe(exc: BaseException) -> tuple[str, int]:
    """Message and exit code for any exception bale may raise."""
    from builder.errors import BaleError
    if isinstance(exc, BaleError):
        return str(exc), exc.exit_code
    try:
        from frontend.errors import FrontendError
        if isinstance(exc, FrontendError):
            return str(exc), getattr(exc, "exit_code", 1)
    except ImportError:
        pass
    try:
        from snapshotter.errors import SnapshotError
        if isinstance(exc, SnapshotError):
            return str(exc), 1
    except ImportError:
        pass
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}:{where}".rstrip(":"), 1
    return f"internal error: {type(exc).__name__}: {exc}", 1


def run_cli(group: click.Group, argv: list[str]) -> Any:
    debug = _debug_requested(argv)
    try:
        rv = group.main(args=argv, prog_name="bale", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("bale: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("bale: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as exc:  # the funnel
        if debug:
            import traceback
            traceback.print_exc()
        msg, code = describe(exc)
        click.echo(f"bale: {msg}", err=True)
        sys.exit(code)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
    sys.exit(0)
