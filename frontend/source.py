"""Dockerfile text to instructions with exact lines and heredocs.

dockerfile-parse splits the file (joining continued lines and dropping
comments inside them); this module adds what it lacks: parser directives
(``# syntax=``, ``# escape=`` including the backtick, ``# check=``), 1-based
lines, and heredocs, whose bodies dockerfile-parse returns as if they were
instructions. The only module importing dockerfile_parse.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

from frontend.errors import FrontendError

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")


@dataclass(frozen=True)
class Heredoc:
    name: str
    body: str
    expand: bool  # an unquoted delimiter allows expansion
    strip_tabs: bool


@dataclass
class RawInstruction:
    keyword: str  # upper case
    args: str  # everything after the keyword, continuation lines joined
    line: int  # first line, 1-based
    end_line: int
    heredocs: list[Heredoc] = field(default_factory=list)
    original: str = ""


@dataclass
class Source:
    filename: str
    instructions: list[RawInstruction]
    directives: dict[str, str]
    escape: str


def _directives(lines: list[str]) -> tuple[dict[str, str], int]:
    """Parser directives at the top of the file; stops at the first non-directive line."""
    found: dict[str, str] = {}
    n = 0
    for n, line in enumerate(lines):
        m = _DIRECTIVE.match(line.strip()) if line.strip().startswith("#") else None
        if not m:
            break
        key = m.group(1).lower()
        if key not in ("syntax", "escape", "check"):
            break
        if key in found:
            break
        found[key] = m.group(2)
    return found, n


def _join(content: str, keyword: str, escape: str) -> str:
    """The instruction's arguments: keyword removed, escaped newlines joined."""
    text = content.rstrip("\n")
    text = re.sub(re.escape(escape) + r"[ \t]*\n", "", text)
    text = "\n".join(l for l in text.split("\n") if not l.lstrip().startswith("#")) if "\n" in text else text
    return text.strip()[len(keyword):].strip()


def _blank_continuations(text: str) -> str:
    """Docker lets empty lines sit inside a continued instruction; dockerfile-parse ends it there.
    Turn them into comment lines, which both skip, so line numbers stay exact."""
    out, cont = [], False
    for line in text.split("\n"):
        stripped = line.strip()
        if cont and not stripped:
            out.append("#")
            continue
        out.append(line)
        if stripped and not stripped.startswith("#"):
            cont = stripped.endswith("\\")
    return "\n".join(out)


def parse_source(text: str, filename: str = "Dockerfile") -> Source:
    from dockerfile_parse import DockerfileParser
    lines = text.splitlines()
    directives, _ = _directives(lines)
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise FrontendError(f"invalid escape directive {escape!r}: must be \\ or `", filename=filename, line=1)
    parse_text = text
    if escape == "`":  # dockerfile-parse knows only the backslash: hand it backslash continuations
        parse_text = "\n".join(re.sub(r"\\(\s*)$", r"\\ \1#", l) if l.rstrip().endswith("\\") else
                               re.sub(r"`(\s*)$", r"\\\1", l) for l in lines) + "\n"
    parse_text = _blank_continuations(parse_text)
    parser = DockerfileParser(fileobj=io.BytesIO(parse_text.encode()))
    out: list[RawInstruction] = []
    skip_until = -1
    for entry in parser.structure:
        start, end = entry["startline"], entry["endline"]
        if start <= skip_until or entry["instruction"] == "COMMENT":
            continue
        keyword = entry["instruction"].upper()
        content = "\n".join(lines[start:end + 1]) + "\n"
        joined = _join(content, keyword if escape == "\\" else keyword, escape) if escape == "`" else \
            _join(entry["content"], keyword, "\\")
        inst = RawInstruction(keyword, joined, start + 1, end + 1, original=content.strip())
        pos = end + 1
        for m in _HEREDOC.finditer(joined if keyword in ("RUN", "COPY", "ADD") else ""):
            strip, quote, name = m.group(1) == "-", m.group(2), m.group(3)
            body: list[str] = []
            while True:
                if pos >= len(lines):
                    raise FrontendError(f"unterminated heredoc <<{name}", filename=filename, line=start + 1,
                                        instruction=keyword)
                line = lines[pos]
                pos += 1
                if (line.lstrip("\t") if strip else line) == name:
                    break
                body.append(line.lstrip("\t") if strip else line)
            inst.heredocs.append(Heredoc(name, "\n".join(body) + "\n", not quote, strip))
            inst.end_line = pos
            skip_until = pos - 1
        out.append(inst)
    return Source(filename, out, directives, escape)
