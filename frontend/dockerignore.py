""".dockerignore: Docker's pattern rules (Go filepath.Match syntax plus ``**``),
leading ``/`` and ``./`` cleaned, ``!`` exceptions, the last match wins, and
a pattern matching a directory excludes everything under it."""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class _Pattern:
    text: str
    regex: re.Pattern[str]
    exclusion: bool  # a "!" exception


def _translate(pattern: str) -> re.Pattern[str]:
    """filepath.Match with ``**`` (any number of directories) → a regex over the whole path."""
    out = ["^"]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i:i + 2] == "**":
                i += 2
                if pattern[i:i + 1] == "/":
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                if body.startswith("^"):
                    body = "!" + body[1:]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
                i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return re.compile("".join(out))


def _clean(p: str) -> str:
    p = posixpath.normpath(p.strip())
    while p.startswith("/") or p.startswith("./"):
        p = p[1:] if p.startswith("/") else p[2:]
    return "" if p == "." else p


class Matcher:
    def __init__(self, lines: list[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exc = line.startswith("!")
            if exc:
                line = line[1:].strip()
            text = _clean(line)
            if not text:
                continue
            self.patterns.append(_Pattern(text, _translate(text), exc))

    @classmethod
    def from_text(cls, text: str) -> "Matcher":
        return cls(text.splitlines())

    def excluded(self, rel: str, is_dir: bool = False) -> bool:
        """Whether context-relative ``rel`` is excluded (a parent's exclusion counts)."""
        rel = _clean(rel)
        if not rel:
            return False
        parents = [rel[:i] for i, c in enumerate(rel) if c == "/"]
        result = False
        for p in self.patterns:
            if p.regex.match(rel) or any(p.regex.match(parent) for parent in parents):
                result = not p.exclusion
        return result

    def __call__(self, rel: str, is_dir: bool = False) -> bool:
        return self.excluded(rel, is_dir)

    def may_contain_exceptions(self, dir_rel: str) -> bool:
        """Whether an excluded directory must still be walked for ``!`` exceptions inside it."""
        prefix = _clean(dir_rel) + "/"
        return any(p.exclusion and (p.text.startswith(prefix) or "*" in p.text) for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)


def ignore_file_for(dockerfile: Path, context: Path) -> Path | None:
    """``NAME.dockerignore`` beside a Dockerfile called NAME wins over CONTEXT/.dockerignore."""
    specific = dockerfile.parent / (dockerfile.name + ".dockerignore")
    if specific.is_file():
        return specific
    general = context / ".dockerignore"
    return general if general.is_file() else None
