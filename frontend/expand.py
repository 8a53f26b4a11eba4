"""Word expansion as Docker defines it (BuildKit's shell lexer): ``$VAR``,
``${VAR}``, ``${VAR:-word}``, ``${VAR-word}``, ``${VAR:+word}``,
``${VAR+word}``, ``${VAR:?msg}``, single quotes literal, double quotes
grouping, and the escape character (``\\`` or the backtick)."""
from __future__ import annotations

from typing import Mapping


class ExpandError(ValueError):
    pass


MAX_DEPTH = 200  # ${...} inside ${...}: BuildKit recurses without a limit; bale stops here, cleanly


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str, keep_quotes: bool,
                 skip_quotes: bool = False) -> None:
        self.s, self.i, self.env, self.esc, self.keep = text, 0, env, escape, keep_quotes
        self.depth = 0
        self.quotes = "" if skip_quotes else "'\""  # lex.go SkipProcessQuotes: quotes are plain text

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        c = self.peek()
        self.i += 1
        return c

    def words(self) -> list[str]:
        """Split on unquoted whitespace, expanding each word."""
        out: list[str] = []
        cur: list[str] = []
        started = False
        while self.i < len(self.s):
            c = self.peek()
            if c in " \t\n" and True:
                self.next()
                if started:
                    out.append("".join(cur))
                    cur, started = [], False
                continue
            started = True
            cur.append(self._unit())
        if started:
            out.append("".join(cur))
        return out

    def word(self) -> str:
        parts = []
        while self.i < len(self.s):
            parts.append(self._unit())
        return "".join(parts)

    def _unit(self) -> str:
        c = self.peek()
        if c and c in self.quotes:
            return self._single() if c == "'" else self._double()
        if c == "$":
            return self._dollar()
        if c == self.esc:
            self.next()
            n = self.next()
            return (c + n) if self.keep and n else n
        return self.next()

    def _single(self) -> str:
        self.next()
        start = self.i
        end = self.s.find("'", start)
        if end < 0:
            raise ExpandError("unterminated single quote")
        self.i = end + 1
        body = self.s[start:end]
        return f"'{body}'" if self.keep else body

    def _double(self) -> str:
        self.next()
        out = []
        while True:
            c = self.peek()
            if not c:
                raise ExpandError("unterminated double quote")
            if c == '"':
                self.next()
                break
            if c == "$":
                out.append(self._dollar())
            elif c == self.esc:
                self.next()
                n = self.next()
                out.append(n if n in ('"', "$", self.esc) else c + n)
            else:
                out.append(self.next())
        body = "".join(out)
        return f'"{body}"' if self.keep else body

    def _name(self) -> str:
        start = self.i
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.i += 1
        return self.s[start:self.i]

    def _dollar(self) -> str:
        self.next()
        c = self.peek()
        if c == "{":
            self.next()
            self.depth += 1
            try:
                return self._braced()
            finally:
                self.depth -= 1
        if c and (c.isalnum() or c == "_"):
            if c.isdecimal():  # lex.go:494: $1, $12 (every digit) are positional: unset
                while self.peek().isdecimal() and self.peek():
                    self.next()
                return ""
            return self.env.get(self._name(), "")
        if c and c in "@*#?-$!":  # lex.go:502 special parameters: unset
            self.next()
            return ""
        return "$"

    def _braced(self) -> str:
        if self.depth > MAX_DEPTH:
            raise ExpandError(f"${{...}} nested more than {MAX_DEPTH} deep")
        name = self._name()
        if not name:
            raise ExpandError("bad substitution: empty variable name")
        op = self.peek()
        if op == "}":
            self.next()
            return self.env.get(name, "")
        colon = op == ":"
        if colon:
            self.next()
            op = self.peek()
        if op not in ("-", "+", "?"):
            raise ExpandError(f"unsupported modifier {op!r} in ${{{name}}}")
        self.next()
        word = self._until_brace()
        value = self.env.get(name)
        is_set = value is not None and (value != "" or not colon)
        if op == "-":
            return value if is_set else word  # type: ignore[return-value]
        if op == "+":
            return word if is_set else ""
        if not is_set:
            raise ExpandError(f"{name}: {word or 'is not allowed to be unset'}")
        return value  # type: ignore[return-value]

    def _until_brace(self) -> str:
        out: list[str] = []
        depth = 0
        while True:
            c = self.peek()
            if not c:
                raise ExpandError("missing '}'")
            if c == "}" and depth == 0:
                self.next()
                return "".join(out)
            if c == "$":
                out.append(self._dollar())
                continue
            if c == "{":
                depth += 1
            if c == "}":
                depth -= 1
            if c and c in self.quotes:
                out.append(self._single() if c == "'" else self._double())
                continue
            if c == self.esc:
                self.next()
                out.append(self.next())
                continue
            out.append(self.next())


def expand_word(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """One word: quotes removed, variables expanded."""
    return _Lexer(text, env, escape, False).word()


def expand_heredoc(text: str, env: Mapping[str, str]) -> str:
    """A COPY/ADD heredoc body whose delimiter was not quoted: variables expanded, quotes kept,
    ``\\`` escapes (always the backslash) applied, as BuildKit's ExpandRaw does
    (dockerfile2llb/convert.go:1049-1056, instructions/commands.go:230)."""
    return _Lexer(text, env, "\\", False, skip_quotes=True).word()


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Whitespace-separated words, each expanded (EXPOSE, VOLUME, USER ...)."""
    return _Lexer(text, env, escape, False).words()


def split_raw(text: str, escape: str = "\\") -> list[str]:
    """Split on unquoted whitespace without expanding, keeping quotes (for KEY=VALUE lists)."""
    out, cur, quote, i = [], [], "", 0
    while i < len(text):
        c = text[i]
        if quote:
            cur.append(c)
            if c == escape and quote == '"' and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c == escape and i + 1 < len(text):
            cur += [c, text[i + 1]]
            i += 2
            continue
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c in " \t\n":
            if cur:
                out.append("".join(cur))
                cur = []
        else:
            cur.append(c)
        i += 1
    if quote:
        raise ExpandError(f"unterminated {quote} quote")
    if cur:
        out.append("".join(cur))
    return out
