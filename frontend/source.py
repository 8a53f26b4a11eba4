"""Dockerfile text to instructions with exact lines and heredocs.

A port of BuildKit's line parser (moby/buildkit
frontend/dockerfile/parser/parser.go ``Parse``, directives.go, split_command.go):
a UTF-8 byte-order mark on the first line is dropped, lines end at ``\\n``
(a ``\\r`` before it is dropped too), parser directives (``# syntax=``,
``# escape=``, ``# check=``) come first, the escape character continues a line,
comment and blank lines inside a continued instruction are skipped, and a RUN,
COPY or ADD (also under ONBUILD) in shell form reads one body per ``<<`` word
from the lines after it. Lines may not exceed 65535 bytes (bufio's limit).

Text that BuildKit would pass on but bale cannot represent is refused with
``FILE:LINE: INSTRUCTION: cause``: bytes that are not UTF-8 (read with
``surrogateescape``) and NUL bytes, anywhere but in comments and COPY/ADD
heredoc bodies (NUL) respectively.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from frontend.errors import FrontendError
from frontend.heredoc import GO_SPACE, LexError, heredocs_in_line

MAX_LINE = 65535  # parser.go:568 bufio.MaxScanTokenSize - 1
_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z")  # directives.go:43
_SPLIT = re.compile(r"[\t\v\f\r ]+")  # parser.go:120 reWhitespace
_BAD_BYTE = re.compile("[\udc80-\udcff]")
_HEREDOC_DIRECTIVES = ("RUN", "COPY", "ADD")  # parser.go:130
_JSON_LISTS = ("ADD", "COPY", "VOLUME")  # parseMaybeJSONToList
_JSON_MAYBE = ("CMD", "ENTRYPOINT", "RUN", "SHELL")  # parseMaybeJSON
NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"  # line_parsers.go:19


@dataclass(frozen=True)
class Heredoc:
    name: str
    body: str  # the lines after the instruction up to the delimiter, line ends kept; tabs stripped for <<-
    expand: bool  # an unquoted delimiter allows expansion
    strip_tabs: bool
    raw_body: str = ""  # the body as read (tabs kept)


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


def go_trim(text: str) -> str:
    """strings.TrimSpace."""
    start, end = 0, len(text)
    while start < end and text[start] in GO_SPACE:
        start += 1
    while end > start and text[end - 1] in GO_SPACE:
        end -= 1
    return text[start:end]


def _lstrip(text: str) -> str:
    i = 0
    while i < len(text) and text[i] in GO_SPACE:
        i += 1
    return text[i:]


def _is_comment(line: str) -> bool:
    """parser.go:523 isComment."""
    return _lstrip(line).startswith("#")


def parse_json_array(text: str) -> list[str] | None:
    """line_parsers.go:278 parseJSON: ``text`` as a JSON array of strings, or None when it is
    not JSON (then Docker reads the shell form). Raises ValueError(NOT_STRING_ARRAY) for an
    array holding anything but strings. Nesting deeper than Go's decoder allows (10000) is
    not JSON; no recursion, whatever the depth."""
    rest = _lstrip(text)
    if not rest.startswith("["):
        return None
    depth = _max_depth(rest)
    if depth > 10000:
        return None
    if depth > 1:
        return _deep(rest)
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise ValueError(NOT_STRING_ARRAY)
    return value


def _max_depth(text: str) -> int:
    """Bracket depth outside JSON strings."""
    depth = best = 0
    in_str = esc = False
    for c in text:
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "[{":
            depth += 1
            best = max(best, depth)
        elif c in "]}":
            depth -= 1
    return best


_TOKEN = re.compile(r'[ \t\n\r]*(?:([\[\]{},:])|("(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*")|'
                    r'(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null))')


def _deep(text: str) -> list[str] | None:
    """A nested array: valid JSON (checked without recursion) holds a non-string; else not JSON."""
    stack: list[str] = []
    want, pos = "value", 0
    while True:
        m = _TOKEN.match(text, pos)
        if not m:
            break
        pos = m.end()
        tok = m.group(1) or ("s" if m.group(2) is not None else "v")
        if tok in ("s", "v", "[", "{"):
            if want in ("key", "key_or_close"):
                if tok != "s":
                    return None
                want = "colon"
            elif want in ("value", "value_or_close"):
                if tok in ("[", "{"):
                    stack.append(tok)
                    want = "value_or_close" if tok == "[" else "key_or_close"
                else:
                    want = "comma_or_close" if stack else "end"
            else:
                return None
        elif tok == ":":
            if want != "colon":
                return None
            want = "value"
        elif tok == ",":
            if want != "comma_or_close":
                return None
            want = "value" if stack[-1] == "[" else "key"
        else:  # ] or }
            opener = "[" if tok == "]" else "{"
            if not stack or stack[-1] != opener or want not in ("comma_or_close", opener == "[" and
                                                                 "value_or_close" or "key_or_close"):
                return None
            stack.pop()
            want = "comma_or_close" if stack else "end"
    if want != "end" or text[pos:].strip(" \t\n\r"):
        return None
    raise ValueError(NOT_STRING_ARRAY)


def extract_flags(text: str, escape: str) -> str:
    """split_command.go:28 extractBuilderFlags: what follows the leading ``--flag`` words."""
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in GO_SPACE:
            i += 1
        if i >= n or not text.startswith("--", i):
            return text[i:]
        start, quote = i, ""
        while i < n:
            c = text[i]
            if quote:
                if c == quote:
                    quote = ""
                elif c == escape:
                    i += 1
            elif c in GO_SPACE:
                break
            elif c in "'\"":
                quote = c
            elif c == escape:
                i += 1
            i += 1
        if text[start:i] == "--":
            return text[i:]


class _Parser:
    def __init__(self, text: str, filename: str) -> None:
        self.filename = filename
        if text.startswith("\ufeff"):  # parser.go:296 discardBOM
            text = text[1:]
        parts = text.split("\n")
        self.lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
        self.pos = 0
        self.escape = "\\"
        self.cont = self._cont_regex("\\")
        self.directives: dict[str, str] = {}
        self.directives_done = False

    def err(self, cause: str, line: int, keyword: str | None = None) -> FrontendError:
        return FrontendError(cause, filename=self.filename, line=line, instruction=keyword or None)

    @staticmethod
    def _cont_regex(esc: str) -> re.Pattern[str]:
        e = re.escape(esc)
        return re.compile(f"([^{e}]){e}[ \t]*\\Z|^{e}[ \t]*\\Z")  # parser.go:168

    def scan(self) -> str | None:
        if self.pos >= len(self.lines):
            return None
        line = self.lines[self.pos]
        self.pos += 1
        if len(line) > MAX_LINE // 4 and len(line.rstrip("\n").encode("utf-8", "surrogateescape")) > MAX_LINE:
            raise self.err(f"dockerfile line greater than max allowed size of {MAX_LINE}", self.pos)
        return line

    def directive(self, line: str, n: int) -> bool:
        """directives.go:50 ParseLine and parser.go:153 setEscapeToken."""
        if self.directives_done:
            return False
        if not line.startswith("#"):
            self.directives_done = True
            return False
        m = _DIRECTIVE.match(_lstrip(line[1:]))
        key = m.group(1).lower() if m else ""
        if not m or key not in ("syntax", "escape", "check"):
            self.directives_done = True
            return False
        if key in self.directives:
            raise self.err(f"only one {key} parser directive can be used", n)
        value = m.group(2)
        if key == "escape":
            if value not in ("`", "\\"):
                raise self.err(f"invalid escape token '{value}' does not match ` or \\", n)
            self.escape, self.cont = value, self._cont_regex(value)
        self.directives[key] = value
        return True

    def process(self, raw: str, strip_left: bool, n: int) -> str:
        """parser.go:542 processLine: line end dropped, directives read, comments emptied."""
        token = raw.rstrip("\r\n")
        if strip_left:
            token = _lstrip(token)
        self.directive(token, n)
        return "" if _is_comment(token) else token

    def trim_cont(self, line: str) -> tuple[str, bool]:
        if self.cont.search(line):
            return self.cont.sub(r"\1", line), False
        return line, True

    def parse(self) -> Source:
        out: list[RawInstruction] = []
        current = 0
        while (raw := self.scan()) is not None:
            text = self.process(raw, True, current + 1)
            current += 1
            start = current
            text, end = self.trim_cont(text)
            if end and not text:
                continue
            buf = [text]
            while not end and (raw := self.scan()) is not None:
                more = self.process(raw, False, current + 1)
                current += 1
                if _is_comment(raw) or not _lstrip(more):
                    continue  # comment lines and empty continuation lines
                more, end = self.trim_cont(more)
                buf.append(more)
            line = "".join(buf)
            inst = self.instruction(line, start, current)
            if self.can_hold_heredocs(inst) and "<<" in line:
                try:
                    words = heredocs_in_line(line)
                except LexError as exc:
                    raise self.err(str(exc), start, inst.keyword) from None
                for h in words:
                    body: list[str] = []
                    while True:
                        raw = self.scan()
                        if raw is None:
                            raise self.err(f"unterminated heredoc <<{h.name}", start, inst.keyword)
                        current += 1
                        possible = raw.rstrip("\r\n")
                        if (possible.lstrip("\t") if h.chomp else possible) == h.name:
                            break
                        body.append(raw)
                    content = "".join(body)
                    chomped = re.sub(r"(?m)^\t+", "", content) if h.chomp else content  # parser.go:502
                    inst.heredocs.append(Heredoc(h.name, chomped, h.expand, h.chomp, content))
                    self.check_body(inst, h.name, content, current)
            inst.end_line = current
            out.append(inst)
        if not out:
            raise self.err("file with no instructions", max(current, 1))
        return Source(self.filename, out, self.directives, self.escape)

    def instruction(self, line: str, start: int, end: int) -> RawInstruction:
        """parser.go:226 newNodeFromLine / split_command.go:10 splitCommand."""
        parts = _SPLIT.split(go_trim(line), maxsplit=1)
        keyword = parts[0].upper()
        args = go_trim(parts[1]) if len(parts) > 1 else ""
        bad = _BAD_BYTE.search(line)
        if bad:
            raise self.err(f"invalid UTF-8: byte 0x{ord(bad.group()) - 0xdc00:02x} (the Dockerfile must be UTF-8)",
                           start, keyword)
        if "\x00" in line:
            raise self.err("NUL byte in the instruction", start, keyword)
        inst = RawInstruction(keyword, args, start, end, original=line)
        sub_kw, sub_args = (keyword, args)
        if keyword == "ONBUILD":  # line_parsers.go:37 parseSubCommand
            sub = _SPLIT.split(args, maxsplit=1) if args else [""]
            sub_kw, sub_args = sub[0].upper(), go_trim(sub[1]) if len(sub) > 1 else ""
        if sub_kw in _JSON_LISTS + _JSON_MAYBE:
            try:
                parse_json_array(extract_flags(sub_args, self.escape))
            except ValueError as exc:
                raise self.err(str(exc), start, keyword) from None
        return inst

    def can_hold_heredocs(self, inst: RawInstruction) -> bool:
        """parser.go:82 canContainHeredoc: RUN, COPY, ADD (also as an ONBUILD trigger), not in JSON form."""
        kw, args = inst.keyword, inst.args
        if kw == "ONBUILD":
            sub = _SPLIT.split(args, maxsplit=1) if args else [""]
            kw, args = sub[0].upper(), go_trim(sub[1]) if len(sub) > 1 else ""
        if kw not in _HEREDOC_DIRECTIVES:
            return False
        try:
            return parse_json_array(extract_flags(args, self.escape)) is None
        except ValueError:
            return False

    def check_body(self, inst: RawInstruction, name: str, body: str, end: int) -> None:
        bad = _BAD_BYTE.search(body)
        if bad:
            raise self.err(f"heredoc <<{name}: invalid UTF-8: byte 0x{ord(bad.group()) - 0xdc00:02x}", inst.line,
                           inst.keyword)
        if "\x00" in body and (inst.keyword == "RUN" or inst.args.upper().startswith("RUN")):
            raise self.err(f"heredoc <<{name}: NUL byte in a RUN script", inst.line, inst.keyword)


def parse_source(text: str, filename: str = "Dockerfile") -> Source:
    """Instructions of ``text`` (a str; bytes that are not UTF-8 as surrogateescape).

    Raises FrontendError (``FILE:LINE: INSTRUCTION: cause``) for what BuildKit's parser
    refuses, and for bytes bale cannot carry (see the module docstring)."""
    return _Parser(text, filename).parse()
