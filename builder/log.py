"""bale's logger, ``logging.getLogger("bale")``, for the modules a quick command imports, without
importing logging until it is used: logging (with traceback, linecache, tokenize and string) is
about 5 ms of `bale from scratch`'s start-up (issue 10), which logs nothing when all goes well.

``log`` has logging.Logger's methods; its first use imports logging. ``configure(level)`` is
logging.basicConfig with bale's format (``bale: LEVEL: message``), applied at once when logging
is imported already, else when it is: by ``log``'s first use, or by the first ``import logging``
of any module (a finder on sys.meta_path waits for it), so a module that logs through logging
itself still writes bale's format."""
from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing is not imported here
if TYPE_CHECKING:
    import logging
    from types import ModuleType
    from typing import Any, Sequence

#: level names bale takes (--log-level after its aliases) -> logging's levels
LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}
FORMAT = "bale: %(levelname)s: %(message)s"
_pending: list[str] = []  # the level configure() was given before logging was imported


def configure(level: str) -> None:
    """bale's log lines from ``level`` (debug, info, warn or error) on, on stderr."""
    if "logging" in sys.modules:
        _apply(level)
        return
    _pending[:] = [level]
    if _WhenImported not in sys.meta_path:
        sys.meta_path.insert(0, _WhenImported)


def _apply(level: str) -> None:
    sys.modules["logging"].basicConfig(level=LEVELS[level], format=FORMAT)


def _apply_pending() -> None:
    if _pending:
        _apply(_pending.pop())
    if _WhenImported in sys.meta_path:
        sys.meta_path.remove(_WhenImported)


class _WhenImported:
    """A finder that finds nothing itself: for the first ``import logging`` it has the path
    finder's spec load the module, then applies the pending configuration."""

    @classmethod
    def find_spec(cls, name: str, path: "Sequence[str] | None" = None, target: "ModuleType | None" = None) -> "Any":
        if name != "logging":
            return None
        sys.meta_path.remove(cls)
        from importlib.machinery import PathFinder
        spec = PathFinder.find_spec(name, path)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec  # loaded as it is; ``log``'s first use applies the configuration
        load = loader.exec_module

        def exec_module(module: "ModuleType") -> None:
            del loader.exec_module  # type: ignore[union-attr]  # the class's method again
            load(module)
            _apply_pending()
        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


class _Log:
    """Stands for the "bale" logger until an attribute is asked for."""

    def __getattr__(self, attr: str) -> "Any":
        import logging
        _apply_pending()
        return getattr(logging.getLogger("bale"), attr)


log: "logging.Logger" = _Log()  # type: ignore[assignment]
