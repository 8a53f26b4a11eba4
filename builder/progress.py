"""Progress reporting seam. Low layers call a ``Progress``; only builder/cli/ knows tqdm."""
from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, key: str, label: str, total: int | None) -> None:
        """A transfer or step named ``key`` begins; ``total`` bytes if known."""

    def advance(self, key: str, nbytes: int) -> None:
        """``nbytes`` more of ``key`` are done (may be negative after a reset)."""

    def done(self, key: str, message: str = "") -> None:
        """``key`` finished; ``message`` is a short status such as 'exists' or 'mounted'."""

    def log(self, message: str) -> None:
        """A free-form status line (suppressed by --quiet)."""


class NullProgress:
    """Reports nothing."""

    def start(self, key: str, label: str, total: int | None) -> None:
        pass

    def advance(self, key: str, nbytes: int) -> None:
        pass

    def done(self, key: str, message: str = "") -> None:
        pass

    def log(self, message: str) -> None:
        pass
