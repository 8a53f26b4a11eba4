"""Dockerfile errors: ``FILE:LINE: INSTRUCTION: cause`` on one line."""
from __future__ import annotations


class FrontendError(Exception):
    """A Dockerfile that cannot be parsed or lowered (exit status 2: a usage error)."""

    exit_code = 2

    def __init__(self, cause: str, *, filename: str = "Dockerfile", line: int | None = None,
                 instruction: str | None = None) -> None:
        self.cause, self.filename, self.line, self.instruction = cause, filename, line, instruction
        where = f"{filename}:{line}" if line else filename
        super().__init__(f"{where}: {instruction}: {cause}" if instruction else f"{where}: {cause}")
