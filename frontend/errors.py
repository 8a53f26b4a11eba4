"""Dockerfile errors: ``FILE:LINE: INSTRUCTION: cause`` on one line."""
from __future__ import annotations

import unicodedata


def one_line(text: str) -> str:
    """``text`` with line breaks, control and invisible characters escaped (``\\x1d``,
    ``\\u2028``) and bytes that were not UTF-8 (surrogateescape) shown as ``\\xNN``."""
    out = []
    for c in text:
        cat = unicodedata.category(c)
        if cat == "Cs":
            out.append(f"\\x{ord(c) - 0xdc00:02x}" if 0xdc80 <= ord(c) <= 0xdcff else f"\\u{ord(c):04x}")
        elif cat in ("Cc", "Cf", "Zl", "Zp") and c != "\t":
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)


class FrontendError(Exception):
    """A Dockerfile that cannot be parsed or lowered (exit status 2: a usage error).
    The message is one line whatever the Dockerfile holds (see ``one_line``)."""

    exit_code = 2

    def __init__(self, cause: str, *, filename: str = "Dockerfile", line: int | None = None,
                 instruction: str | None = None) -> None:
        self.cause, self.filename, self.line, self.instruction = cause, filename, line, instruction
        where = f"{filename}:{line}" if line else filename
        super().__init__(one_line(f"{where}: {instruction}: {cause}" if instruction else f"{where}: {cause}"))
