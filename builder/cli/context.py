"""Per-invocation state shared by all commands: store root, driver, debug flags."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.image.store import Store


@dataclass
class AppContext:
    root: Path
    storage_driver: str | None
    debug: bool
    log_level: str
    _store: "Store | None" = field(default=None, repr=False)

    @classmethod
    def create(cls, root: str | None, storage_driver: str | None, debug: bool, log_level: str) -> "AppContext":
        from builder.image.store import default_root
        level = "debug" if debug else log_level
        logging.basicConfig(level={"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
                                   "error": logging.ERROR}[level], format="bale: %(levelname)s: %(message)s")
        return cls(Path(root) if root else default_root(), storage_driver, debug, level)

    @property
    def store(self) -> "Store":
        if self._store is None:
            from builder.image.store import Store
            self._store = Store(self.root)
        return self._store
