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
        return _os_error(exc), 1
    return f"internal error: {type(exc).__name__}: {exc}", 1


def click_message(exc: click.ClickException) -> str:
    """click's usage errors (three lines: usage, hint, error) as one line naming the command."""
    msg = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        return f"{msg} (see '{ctx.command_path} --help')"
    return msg


def _os_error(exc: OSError) -> str:
    """An OSError as one line; a full disk and a read-only store are named as such."""
    import errno
    name = exc.filename if isinstance(exc.filename, str) else None
    if exc.errno == errno.ENOSPC:
        return f"no space left on device{f' (writing {name})' if name else ''}"
    if exc.errno == errno.EROFS and name:
        store = _store_above(name)
        if store:
            return f"store {store} is on a read-only file system: bale needs to write there (use --root)"
        return f"{name}: read-only file system"
    where = f" {name}" if name else ""
    return f"{exc.strerror or exc}:{where}".rstrip(":")


def _store_above(path: str) -> str | None:
    """The bale store holding ``path`` (a directory with blobs/ and tmp/), if any."""
    from pathlib import Path
    for p in Path(path).parents:
        if (p / "blobs").is_dir() and (p / "tmp").is_dir():
            return str(p)
    return None


def _on_interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C while a worker thread waits for a RUN: kill the RUN now, then unwind."""
    from builder.sandbox.userns import kill_live_children
    kill_live_children()
    raise KeyboardInterrupt


def run_cli(group: click.Group, argv: list[str]) -> Any:
    debug = _debug_requested(argv)
    import signal
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_interrupt)
    try:
        rv = group.main(args=argv, prog_name="bale", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("bale: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"bale: {click_message(exc)}", err=True)
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
