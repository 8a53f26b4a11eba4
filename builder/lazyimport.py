"""Third-party packages that take tens of milliseconds to import (requests: ~90 ms of CPU with
urllib3 and charset_normalizer; cryptography: ~20 ms) and that most commands never use:
``bale from scratch``, ``bale run`` or a build without a registry or a signature import them
only through modules they import for other reasons. ``lazy(NAME)`` stands for the module and
imports it at the first attribute access, in whichever thread comes first (importlib's
per-module lock makes that safe); the rest of bale's imports stay at module level.

bale's own modules that pull in a large stack use it the same way where the commands that need
them are few: the pull/push stack and the copy, commit and snapshot-worker code in
builder/scripted.py, the namespace helper and each isolation in builder/workspace/runtime.py
and builder/sandbox/probe.py (``bale from scratch`` needs none of them;
tests/cli/test_startup_imports.py). Never for a module a forked namespace worker imports
while another thread of bale may be importing it (builder/workspace/snapshots.py says why).

Type checkers see the real module: import it under ``if TYPE_CHECKING`` and bind ``lazy`` in
the ``else`` branch.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _Lazy(types.ModuleType):
    """Stands for the module named ``__name__`` until an attribute is asked for."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attr)


def lazy(name: str) -> Any:
    """The module ``name`` if imported already, else a stand-in that imports it on first use.
    ImportError (a missing package) is raised then, by that use."""
    module = sys.modules.get(name)
    return module if module is not None else _Lazy(name)
