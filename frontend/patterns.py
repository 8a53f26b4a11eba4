""".dockerignore patterns exactly as moby/patternmatcher reads them, matched in linear time.

``compile_pattern(text)`` follows patternmatcher.go ``New`` (:42-76) and
``Pattern.compile`` (:345-440): the pattern is first checked with the rules of
Go's ``filepath.Match`` (a ``[`` class needs a range and a ``]``, no trailing
``\\``), then turned into the same Go regular expression patternmatcher builds
(``*`` → ``[^/]*``, ``?`` → ``[^/]``, ``**`` → ``(.*/)?`` or ``.*``, ``[``/``]``
passed through, ``\\x`` kept). That expression is parsed here (the RE2 subset
such expressions use) and run as a lazily built DFA: time linear in the path,
whatever the pattern (repeated ``**`` included), never backtracking (frontend.goregexp).
Exact, prefix and suffix patterns are matched as patternmatcher does (:312-343).

Errors are ``PatternError`` with Go's message (``syntax error in pattern``).
"""
from __future__ import annotations

from dataclasses import dataclass

from frontend.goregexp import PatternError, Regex

_ESCAPED = set(".+()|{}$")  # patternmatcher.go:29 shouldEscape
MAX_LINE = 65535  # bufio.MaxScanTokenSize - 1


def go_clean(path: str) -> str:
    """Go's path/filepath.Clean on a slash-separated path."""
    if not path:
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    text = "/".join(out)
    if rooted:
        return "/" + text
    return text or "."


# --- Go's filepath.Match syntax check (path/filepath/match.go) ---

def _scan_chunk(p: str, i: int) -> tuple[bool, int, int]:
    """match.go scanChunk over ``p[i:]``: (star, chunk start, chunk end)."""
    star = False
    while i < len(p) and p[i] == "*":
        i, star = i + 1, True
    start, inrange = i, False
    while i < len(p):
        c = p[i]
        if c == "\\":
            if i + 1 < len(p):
                i += 1
        elif c == "[":
            inrange = True
        elif c == "]":
            inrange = False
        elif c == "*" and not inrange:
            break
        i += 1
    return star, start, i


def _bad() -> PatternError:
    return PatternError("syntax error in pattern")


def _get_esc(p: str, i: int, end: int) -> int:
    """match.go getEsc on ``p[i:end]``: the index after one (escaped) character of a class."""
    if i >= end or p[i] in "-]":
        raise _bad()
    if p[i] == "\\":
        i += 1
        if i >= end:
            raise _bad()
    if "\udc80" <= p[i] <= "\udcff":  # a byte that is not UTF-8: utf8.RuneError
        raise _bad()
    i += 1
    if i >= end:
        raise _bad()
    return i


def _check_chunk(p: str, i: int, end: int) -> None:
    """match.go matchChunk's syntax checks on ``p[i:end]``."""
    while i < end:
        c = p[i]
        if c == "[":
            i += 1
            if i < end and p[i] == "^":
                i += 1
            nrange = 0
            while True:
                if i < end and p[i] == "]" and nrange > 0:
                    i += 1
                    break
                i = _get_esc(p, i, end)
                if p[i] == "-":
                    i = _get_esc(p, i + 1, end)
                nrange += 1
        elif c == "\\":
            i += 1
            if i >= end:
                raise _bad()
            i += 1
        else:
            i += 1


def check_go_match(pattern: str) -> None:
    """Raise PatternError where ``filepath.Match(pattern, ".")`` returns ErrBadPattern."""
    i = 0
    while i < len(pattern):
        star, start, end = _scan_chunk(pattern, i)
        if star and start == end:
            return
        _check_chunk(pattern, start, end)
        i = end


# --- the regular expression patternmatcher builds (patternmatcher.go:345-440) ---

def go_regex(pattern: str) -> tuple[str, str]:
    """(match type, Go regexp source) for a cleaned pattern: exact, prefix, suffix or regexp."""
    out = ["^"]
    kind = "exact"
    i, n, token = 0, len(pattern), 0
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                if i >= n:
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        out.append(".*")
                        kind = "regexp"
                else:
                    out.append("(.*/)?")
                    kind = "regexp"
                if token == 0:
                    kind = "suffix"
            else:
                out.append("[^/]*")
                kind = "regexp"
        elif ch == "?":
            out.append("[^/]")
            kind = "regexp"
        elif ch in _ESCAPED:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append("\\" + pattern[i])
                i += 1
                kind = "regexp"
            else:
                out.append("\\")
        elif ch in "[]":
            out.append(ch)
            kind = "regexp"
        else:
            out.append(ch)
        token += 1
    if kind == "regexp":
        out.append("$")
    return kind, "".join(out)


@dataclass
class Pattern:
    """One pattern as patternmatcher holds it (``exclusion`` for a ``!`` line)."""

    text: str  # cleanedPattern
    exclusion: bool
    kind: str
    regex: Regex | None = None

    def match(self, path: str) -> bool:
        """patternmatcher.go:312 Pattern.match on a slash-separated relative path."""
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regex is not None
        return self.regex.fullmatch(path)


def compile_pattern(line: str) -> Pattern | None:
    """patternmatcher.go:46-73 for one pattern (None for a blank one); raises PatternError."""
    if len(line) > MAX_LINE // 4 and len(line.encode("utf-8", "surrogateescape")) > MAX_LINE:
        raise PatternError("bufio.Scanner: token too long")  # ignorefile.go:33 reads lines with a Scanner
    p = line.strip(" \t\n\r\v\f\x85\xa0")
    if not p:
        return None
    p = go_clean(p)
    exclusion = p.startswith("!")
    if exclusion:
        if len(p) == 1:
            raise PatternError('illegal exclusion pattern: "!"')
        p = p[1:]
    check_go_match(p)
    kind, src = go_regex(p)
    return Pattern(p, exclusion, kind, Regex(src) if kind == "regexp" else None)
