"""Progress on the terminal: a tqdm bar per blob on a TTY, plain lines otherwise,
nothing with --quiet. Thread-safe (blobs move in parallel)."""
from __future__ import annotations

import sys
import threading
import time
from typing import Any

from builder.progress import NullProgress, Progress


class PlainProgress:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[str, tuple[str, float]] = {}

    def _line(self, text: str) -> None:
        with self._lock:
            print(text, file=sys.stderr, flush=True)

    def start(self, key: str, label: str, total: int | None) -> None:
        if key not in self._started:
            self._started[key] = (label, time.monotonic())
            size = f" ({total / 1e6:.1f} MB)" if total else ""
            self._line(f"Copying blob {label}{size}")

    def advance(self, key: str, nbytes: int) -> None:
        pass

    def done(self, key: str, message: str = "") -> None:
        label, t0 = self._started.pop(key, (key[7:19], time.monotonic()))
        if message in ("exists", "mounted"):
            self._line(f"Copying blob {label} skipped: {'already exists' if message == 'exists' else 'mounted'}")
        else:
            self._line(f"Copying blob {label} done {time.monotonic() - t0:.1f}s")

    def log(self, message: str) -> None:
        self._line(message)


class TqdmProgress:
    def __init__(self) -> None:
        from tqdm import tqdm
        self._tqdm = tqdm
        self._bars: dict[str, Any] = {}
        self._lock = threading.Lock()

    def start(self, key: str, label: str, total: int | None) -> None:
        with self._lock:
            if key not in self._bars:
                self._bars[key] = self._tqdm(total=total, desc=f"blob {label}", unit="B", unit_scale=True,
                                             leave=True, file=sys.stderr, position=len(self._bars))

    def advance(self, key: str, nbytes: int) -> None:
        bar = self._bars.get(key)
        if bar is not None:
            bar.update(nbytes)

    def done(self, key: str, message: str = "") -> None:
        with self._lock:
            bar = self._bars.pop(key, None)
        if bar is not None:
            if message:
                bar.set_postfix_str(message)
            bar.close()
        elif message in ("exists", "mounted"):
            print(f"blob {key[7:19]}: {message}", file=sys.stderr)

    def log(self, message: str) -> None:
        self._tqdm.write(message, file=sys.stderr)


def terminal_columns(fd: int = 2) -> int:
    """Columns of the terminal on ``fd``; 0 when it is no terminal or reports no size (a
    pseudo-terminal nobody sized, as CI runners allocate: tqdm would draw blank lines)."""
    import os
    try:
        if not os.isatty(fd):
            return 0
        return os.get_terminal_size(fd).columns
    except OSError:
        return 0


def make_progress(quiet: bool, style: str = "auto") -> Progress:
    """--quiet: nothing; --progress=plain, no terminal, or a terminal of zero columns: plain
    lines; otherwise (or --progress=tty on a sized terminal) tqdm bars."""
    if quiet:
        return NullProgress()
    if style != "plain" and terminal_columns() > 0 and (style == "tty" or sys.stderr.isatty()):
        return TqdmProgress()
    return PlainProgress()
