"""The one funnel from exceptions to exit codes: one line on stderr, no traceback
unless --debug. 1 = the operation failed, 2 = usage error, 130/143 = interrupted.
``run_cli`` runs the click group; ``run_plain`` a command answered without click
(builder/cli/quick.py); both end in ``exit_for`` for anything but click's own exceptions."""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing and click are not imported for a command run without click
if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn

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


def click_message(exc: "click.ClickException") -> str:
    """click's usage errors (three lines: usage, hint, error) as one line naming the command."""
    import click
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


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C (every finally and cleanup runs), exit 128+N."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: "Any") -> None:
    from builder.sandbox.userns import stop_all
    stop_all()  # a RUN in any thread dies now (its namespaces and mounts with it)
    if signum == 2:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _install_signal_handlers() -> None:
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            if signal.getsignal(sig) != signal.SIG_IGN:
                signal.signal(sig, _terminate)


def _say(line: str) -> None:
    """``line`` on stderr, flushed (what click.echo(err=True) does; bale's messages hold no
    escape sequences for it to strip: frontend.errors.one_line escapes control characters)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _say_terminated(exc: Terminated) -> "NoReturn":
    import signal
    _say(f"bale: terminated by {signal.Signals(exc.signum).name}")
    sys.exit(128 + exc.signum)


def exit_for(exc: BaseException, debug: bool) -> "NoReturn":
    """Exit as the funnel says for ``exc`` (an interrupt, a termination, a closed stdout or any
    other exception): one line on stderr (a traceback first with ``debug``)."""
    if isinstance(exc, Terminated):
        _say_terminated(exc)
    if isinstance(exc, KeyboardInterrupt):
        _say("bale: interrupted")
        sys.exit(130)
    if isinstance(exc, BrokenPipeError):
        sys.exit(1)
    if debug:
        import traceback
        traceback.print_exception(exc)
    msg, code = describe(exc)
    from frontend.errors import one_line  # user text (file names, Dockerfile bytes) stays on one line
    _say(f"bale: {one_line(msg)}")
    sys.exit(code)


def run_plain(command: "Callable[[], object]", argv: list[str]) -> "NoReturn":
    """Run ``command`` (a command parsed without click: builder/cli/quick.py) through the funnel.
    After a success the exit handlers run (the lease's removal, logging's flush) and the output
    is flushed, then the process ends without the interpreter's teardown of its ~160 modules
    (about 9 ms of `bale from scratch`'s 75: issue 10); such a command leaves no thread, no
    unclosed file and nothing a finalizer must do."""
    debug = _debug_requested(argv)
    _install_signal_handlers()
    try:
        command()
    except (KeyboardInterrupt, Exception) as exc:  # Terminated is a KeyboardInterrupt
        exit_for(exc, debug)
    import atexit
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        os._exit(1)
    os._exit(0)


def run_cli(group: "click.Group", argv: list[str]) -> "Any":
    import click
    debug = _debug_requested(argv)
    _install_signal_handlers()
    try:
        rv = group.main(args=argv, prog_name="bale", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:  # click turns KeyboardInterrupt (and so Terminated) into Abort
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, Terminated):
            _say_terminated(cause)
        _say("bale: interrupted")
        sys.exit(130)
    except click.ClickException as exc:
        _say(f"bale: {click_message(exc)}")
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, Exception) as exc:  # the funnel
        exit_for(exc, debug)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
    sys.exit(0)
