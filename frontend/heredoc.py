"""Which words of an instruction line open heredocs, as BuildKit decides it.

A port of ``heredocsFromLine`` and ``heredocFromMatch`` (moby/buildkit
frontend/dockerfile/parser/parser.go:414-499) and of the part of the shell
lexer they use (frontend/dockerfile/shell/lex.go:114-533) with an empty
environment and ``SkipUnsetEnv``: variables are kept as written, quotes are
kept or dropped, ``<<`` may be followed by blanks. Any ``<<`` word of a RUN,
COPY or ADD line opens a heredoc, whatever characters its name holds
(``<<one.txt``, ``<<"EOF"``, ``2<<-END``).
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

# Go's unicode.IsSpace
GO_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
                     "\u200a\u2028\u2029\u202f\u205f\u3000")
# parser.go:121 reHeredoc = `^(\d*)<<(-?)\s*([^<]*)$` (Go's \d and \s are ASCII)
_RE_HEREDOC = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)\Z", re.DOTALL)


class LexError(ValueError):
    """The lexer's own errors (an unterminated quote, a bad ``${``)."""


class LexTooDeep(LexError):
    """``${`` nested beyond MAX_DEPTH (BuildKit has no limit; bale refuses, never silently)."""


MAX_DEPTH = 200


@dataclass(frozen=True)
class HeredocWord:
    name: str
    expand: bool  # no part of the delimiter word was quoted
    chomp: bool  # <<- : leading tabs are stripped from the body
    fd: int


class _Words:
    """lex.go:122-165 wordsStruct; the buffer is shared by nested calls, as in Go."""

    def __init__(self, buf: list[str]) -> None:
        self.buf = buf
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in GO_SPACE:
            if self.in_word and self.buf:
                self.words.append("".join(self.buf))
                self.buf.clear()
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.buf.append(text)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def get(self) -> list[str]:
        if self.buf:
            self.words.append("".join(self.buf))
            self.buf.clear()
            self.in_word = False
        return self.words


class _Lex:
    """lex.go's shellWord with an empty environment and SkipUnsetEnv set; escape is always ``\\``."""

    def __init__(self, text: str, raw_quotes: bool, raw_escapes: bool) -> None:
        self.s, self.i = text, 0
        self.raw_quotes, self.raw_escapes = raw_quotes, raw_escapes
        self.shared: list[str] = []
        self.depth = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        ch = self.peek()
        self.i += 1
        return ch

    def process(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """lex.go:169 processStopOn; ``stop`` "" is EOF."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            result: list[str] = []
            self.shared.clear()
            words = _Words(self.shared)
            while self.i < len(self.s):
                ch = self.peek()
                if stop and ch == stop:
                    self.next()
                    return "".join(result), words.get()
                if ch == "$":
                    tmp = self.dollar()
                    result.append(tmp)
                    words.add_string(tmp)
                elif ch in "<'\"":
                    tmp = self.heredoc_marker() if ch == "<" else self.single() if ch == "'" else self.double()
                    result.append(tmp)
                    words.add_raw(tmp)
                else:
                    ch = self.next()
                    if ch == "\\":
                        if self.raw_escapes:
                            words.add_raw(ch)
                            result.append(ch)
                        ch = self.next()
                        if not ch:
                            break
                        words.add_raw(ch)
                    else:
                        words.add_char(ch)
                    result.append(ch)
            if stop:
                raise LexError(f"unexpected end of statement while looking for matching {stop}")
            return "".join(result), words.get()
        finally:
            self.raw_escapes = saved

    def single(self) -> str:
        first = self.next()
        out = [first] if self.raw_quotes else []
        while True:
            ch = self.next()
            if not ch:
                raise LexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double(self) -> str:
        first = self.next()
        out = [first] if self.raw_quotes else []
        while True:
            c = self.peek()
            if not c:
                raise LexError("unexpected end of statement while looking for matching double-quote")
            if c == '"':
                self.next()
                if self.raw_quotes:
                    out.append(c)
                return "".join(out)
            if c == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == "\\":
                if self.raw_escapes:
                    out.append(ch)
                nxt = self.peek()
                if not nxt:
                    continue
                if nxt in ('"', "$", "\\"):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        """lex.go:487 processName."""
        out: list[str] = []
        while self.peek():
            ch = self.peek()
            if not out and ch.isdecimal():
                while self.peek() and self.peek().isdecimal():
                    out.append(self.next())
                return "".join(out)
            if not out and ch in "@*#?-$!0":
                return self.next()
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def dollar(self) -> str:
        """lex.go:338 processDollar, every variable unset and kept as written."""
        self.next()
        if self.peek() != "{":
            name = self.name()
            return "$" + name
        self.next()
        self.depth += 1
        try:
            return self.braced()
        finally:
            self.depth -= 1

    def braced(self) -> str:
        if self.depth > MAX_DEPTH:
            raise LexTooDeep(f"${{...}} nested more than {MAX_DEPTH} deep")
        c = self.peek()
        if not c:
            raise LexError("syntax error: missing '}'")
        if c in "{}:":
            raise LexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            return "${" + name + "}"
        chs = ch
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            chs += ch
        if null_is_unset or ch in ("+", "-", "?", "#", "%"):
            raw = ch in ("#", "%")
            if null_is_unset and raw:
                raise LexError(f"unsupported modifier ({chs}) in substitution")
            word = self.stop_on("}", raw)
            return "${" + name + chs + word + "}"
        if ch == "/":
            if self.peek() == "/":
                self.next()
            pattern = self.stop_on("/", True, "syntax error: missing '/' in ${}")
            replacement = self.stop_on("}", True)
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        raise LexError(f"unsupported modifier ({chs}) in substitution")

    def stop_on(self, stop: str, raw: bool, missing: str = "syntax error: missing '}'") -> str:
        try:
            return self.process(stop, raw)[0]
        except LexError:
            if not self.peek():
                raise LexError(missing) from None
            raise

    def heredoc_marker(self) -> str:
        """lex.go:516 processPossibleHeredoc: ``<<`` and the blanks after it stay in the word."""
        self.next()
        if self.peek() != "<":
            return "<"
        self.next()
        start = self.i
        while self.peek() and self.peek() in "\t\r ":
            self.i += 1
        return "<<" + self.s[start:self.i]


def _process_words(text: str, raw_quotes: bool, raw_escapes: bool) -> list[str]:
    return _Lex(text, raw_quotes, raw_escapes).process("", raw_escapes)[1]


def parse_heredoc(word: str) -> HeredocWord | None:
    """parser.go:415 heredocFromMatch: the heredoc a single word opens, if any.

    Raises LexError where BuildKit's parse fails on the word."""
    m = _RE_HEREDOC.match(word)
    if not m or not m.group(3):
        return None
    rest = m.group(3)
    words = _process_words(rest, False, False)
    if len(words) != 1:
        return None
    raw = _process_words(rest, True, False)
    if len(raw) != len(words):
        raise LexError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    quotes = words[0].count("'") + words[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return HeredocWord(words[0], quotes == raw_quotes, m.group(2) == "-", int(m.group(1) or 0))


def must_parse_heredoc(word: str) -> HeredocWord | None:
    """parser.go:476 MustParseHeredoc: parse_heredoc with errors read as "not a heredoc"."""
    try:
        return parse_heredoc(word)
    except LexError:
        return None


def heredocs_in_line(line: str) -> list[HeredocWord]:
    """parser.go:481 heredocsFromLine: every heredoc word of ``line``, in order
    (a line the lexer cannot split opens none)."""
    try:
        words = _process_words(line, True, True)
    except LexTooDeep:
        raise
    except LexError:
        return []
    out = []
    for w in words:
        h = parse_heredoc(w)
        if h is not None:
            out.append(h)
    return out


def heredoc_file_name(name: str) -> str:
    """The base name of the file BuildKit makes for heredoc ``name`` (a COPY/ADD source, or a
    RUN script with a ``#!`` line); raises ValueError with BuildKit's cause when it cannot.

    BuildKit writes the body with ``llb.Scratch().File(llb.Mkfile(name, ...))``
    (dockerfile2llb/convert_copy.go:302-306, convert.go:1373-1377): the path is cleaned and made
    absolute (client/llb/fileop.go:428 and 897-914 normalizePath) and written with one
    ``os.WriteFile`` into an empty root (solver/llbsolver/file/backend.go:111-123). So a name that
    cleans to one component is that file (``/x``, ``./x``, ``../x`` are ``x``); one with a
    directory in it (``a/b``, ``/etc/passwd``) fails with ENOENT, and one that cleans to the root
    (``.``, ``/``) with EISDIR."""
    p = "/" + posixpath.normpath("/" + name).lstrip("/")  # Go path.Join("/", path.Clean(name))
    if p == "/":
        raise ValueError("open /: is a directory")
    if posixpath.dirname(p) != "/":
        raise ValueError(f"open {p}: no such file or directory")
    return p[1:]
