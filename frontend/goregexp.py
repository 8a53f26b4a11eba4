"""Go regular expressions (the RE2 syntax subset patternmatcher's expressions use), matched in
linear time: parsed into a Thompson program and run as a lazily built DFA whose cache is bounded.

Supported: literals, ``.`` (not newline), ``[...]`` classes with ranges, negation, ``[:name:]``
and ``\\d\\s\\w``, escapes of punctuation, ``\\a\\f\\t\\n\\r\\v``, octal and ``\\x``, groups,
``* ? +``, ``^``/``\\A`` and ``$``/``\\z``. What RE2 accepts beyond that (``\\p{..}``, ``\\Q``,
``\\b``) raises PatternError, as does what RE2 refuses (a reversed range, ``\\q``).
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Callable


class PatternError(ValueError):
    """A pattern patternmatcher (or Go's regexp) refuses."""


Pred = Callable[[str], bool]
_POSIX: dict[str, Pred] = {
    "alnum": lambda c: c.isascii() and c.isalnum(), "alpha": lambda c: c.isascii() and c.isalpha(),
    "ascii": lambda c: c.isascii(), "blank": lambda c: c in " \t", "cntrl": lambda c: c < " " or c == "\x7f",
    "digit": lambda c: "0" <= c <= "9", "graph": lambda c: "!" <= c <= "~", "lower": lambda c: "a" <= c <= "z",
    "print": lambda c: " " <= c <= "~", "punct": lambda c: c.isascii() and not c.isalnum() and "!" <= c <= "~",
    "space": lambda c: c in " \t\n\r\f\v", "upper": lambda c: "A" <= c <= "Z",
    "word": lambda c: c == "_" or (c.isascii() and c.isalnum()),
    "xdigit": lambda c: c in "0123456789abcdefABCDEF",
}
_PERL: dict[str, Pred] = {"d": _POSIX["digit"], "s": lambda c: c in " \t\n\r\f", "w": _POSIX["word"]}
_SIMPLE_ESC = {"a": "\a", "f": "\f", "t": "\t", "n": "\n", "r": "\r", "v": "\v"}


@dataclass
class _Prog:
    """Instructions: ("char", pred) | ("split", a, b) | ("jmp", a) | ("begin",) | ("end",) | ("match",)."""

    code: list[tuple[object, ...]] = field(default_factory=list)

    def emit(self, *ins: object) -> int:
        self.code.append(ins)
        return len(self.code) - 1


class _Parser:
    """Parses the RE2 syntax go_regex produces into Thompson fragments."""

    def __init__(self, src: str) -> None:
        self.s, self.i = src, 0
        self.named_ends = [m.start() for m in re.finditer(":]", src)]  # for [:name:], without rescanning

    def bad(self, why: str) -> PatternError:
        shown = self.s if len(self.s) <= 60 else self.s[:57] + "..."
        return PatternError(f"error parsing regexp: {why[:80]}: `{shown}`")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def parse(self) -> list[object]:
        seq = self.sequence()
        if self.i < len(self.s):
            raise self.bad("unexpected )")
        return seq

    def sequence(self) -> list[object]:
        items: list[object] = []
        while self.i < len(self.s) and self.peek() != ")":
            c = self.peek()
            if c in "*?+":
                if not items or (isinstance(items[-1], tuple) and items[-1][0] in ("star", "opt", "plus")):
                    raise self.bad("missing argument to repetition operator" if not items else
                                   "invalid nested repetition operator")
                self.i += 1
                items[-1] = ({"*": "star", "?": "opt", "+": "plus"}[c], items[-1])
                continue
            items.append(self.atom())
        return items

    def atom(self) -> object:
        c = self.s[self.i]
        self.i += 1
        if c == "(":
            inner = self.sequence()
            if self.peek() != ")":
                raise self.bad("missing closing )")
            self.i += 1
            return ("group", inner)
        if c == "[":
            return ("char", self.char_class())
        if c == ".":
            return ("char", lambda ch: ch != "\n")
        if c == "^":
            return ("begin",)
        if c == "$":
            return ("end",)
        if c == "\\":
            kind, val = self.escape(in_class=False)
            if kind == "lit":
                return ("char", _lit(str(val)))
            if kind == "class":
                return ("char", val)
            return (kind,)
        return ("char", _lit(c))

    def escape(self, in_class: bool) -> tuple[str, object]:
        """("lit", c) | ("class", pred) | ("begin", None) | ("end", None)."""
        if self.i >= len(self.s):
            raise self.bad("trailing backslash at end of expression")
        c = self.s[self.i]
        self.i += 1
        if c.isascii() and not c.isalnum():
            return ("lit", c)
        if c in _SIMPLE_ESC:
            return ("lit", _SIMPLE_ESC[c])
        if c.lower() in _PERL:
            p = _PERL[c.lower()]
            return ("class", p if c.islower() else _neg(p))
        if not in_class and c in "Az":
            return ("begin" if c == "A" else "end", None)
        if c in "01234567":
            digits = c
            while len(digits) < 3 and self.peek() and self.peek() in "01234567":
                digits += self.peek()
                self.i += 1
            if c != "0" and len(digits) == 1:
                raise self.bad(f"invalid escape sequence: `\\{c}`")
            return ("lit", chr(int(digits, 8)))
        if c == "x":
            if self.peek() == "{":
                end = self.s.find("}", self.i)
                hexd = self.s[self.i + 1:end] if end > 0 else ""
                self.i = end + 1 if end > 0 else self.i
            else:
                hexd = self.s[self.i:self.i + 2]
                self.i += 2
            try:
                if not hexd or len(hexd) > 8:
                    raise ValueError
                return ("lit", chr(int(hexd, 16)))
            except (ValueError, OverflowError):
                raise self.bad("invalid escape sequence: `\\x`") from None
        raise self.bad(f"invalid escape sequence: `\\{c}`")  # \p, \Q, \b: RE2 has them; bale refuses them

    def char_class(self) -> Pred:
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        preds: list[Pred] = []
        first = True
        while True:
            if self.i >= len(self.s):
                raise self.bad("missing closing ]")
            c = self.peek()
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if self.s.startswith("[:", self.i):
                k = bisect.bisect_left(self.named_ends, self.i + 2)
                end = self.named_ends[k] if k < len(self.named_ends) else -1
                name = self.s[self.i + 2:end] if end > 0 else ""
                neg = name.startswith("^")
                pred = _POSIX.get(name.lstrip("^")) if end > 0 else None
                if end > 0 and pred is None:
                    raise self.bad(f"invalid character class range: `[:{name}:]`")
                if pred is not None:
                    self.i = end + 2
                    preds.append(pred if not neg else _neg(pred))
                    continue
            lo = self.class_char()
            if isinstance(lo, tuple):
                preds.append(lo[1])
                continue
            if self.peek() == "-" and self.s[self.i + 1:self.i + 2] not in ("]", ""):
                self.i += 1
                hi = self.class_char()
                if isinstance(hi, tuple):
                    raise self.bad("invalid character class range")
                if hi < lo:
                    raise self.bad(f"invalid character class range: `{lo}-{hi}`")
                preds.append(_range(lo, hi))
            else:
                preds.append(_lit(lo))
        if negate:
            return lambda ch: not any(p(ch) for p in preds)
        return lambda ch: any(p(ch) for p in preds)

    def class_char(self) -> str | tuple[str, Pred]:
        c = self.s[self.i]
        self.i += 1
        if c != "\\":
            return c
        kind, val = self.escape(in_class=True)
        if kind == "lit":
            return str(val)
        return ("class", val)  # type: ignore[return-value]


def _lit(c: str) -> Pred:
    return lambda ch: ch == c


def _neg(p: Pred) -> Pred:
    return lambda ch: not p(ch)


def _range(lo: str, hi: str) -> Pred:
    return lambda ch: lo <= ch <= hi


def _compile(items: list[object], prog: _Prog) -> None:
    for item in items:
        assert isinstance(item, tuple)
        kind = item[0]
        if kind == "char":
            prog.emit("char", item[1])
        elif kind in ("begin", "end"):
            prog.emit(kind)
        elif kind == "group":
            _compile(item[1], prog)
        else:  # star / opt / plus around an item
            inner = item[1]
            if kind == "plus":
                _compile([inner], prog)
                kind = "star"
            split = prog.emit("split", 0, 0)
            _compile([inner], prog)
            if kind == "star":
                prog.emit("jmp", split)
            prog.code[split] = ("split", split + 1, len(prog.code))


class Regex:
    """A compiled expression; ``fullmatch`` is linear in the text (a lazily built DFA)."""

    MAX_STATES = 2000

    def __init__(self, src: str) -> None:
        prog = _Prog()
        _compile(_Parser(src).parse(), prog)
        prog.emit("match")
        self.code = prog.code
        self._states: dict[frozenset[int], int] = {}
        self._sets: list[frozenset[int]] = []
        self._next: dict[tuple[int, str], int] = {}
        self._accept: dict[int, bool] = {}
        self._start: int | None = None  # the initial state's id (the closure of pc 0 at the beginning)

    def _closure(self, pcs: list[int], at_begin: bool, at_end: bool = False) -> frozenset[int]:
        seen: set[int] = set()
        out: set[int] = set()
        stack = list(pcs)
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            ins = self.code[pc]
            op = ins[0]
            if op == "split":
                stack += [ins[1], ins[2]]  # type: ignore[list-item]
            elif op == "jmp":
                stack.append(ins[1])  # type: ignore[arg-type]
            elif op == "begin":
                if at_begin:
                    stack.append(pc + 1)
            elif op == "end":
                if at_end:
                    stack.append(pc + 1)
                else:
                    out.add(pc)  # may pass at the end of the text
            else:
                out.add(pc)
        return frozenset(out)

    def _intern(self, s: frozenset[int]) -> int:
        sid = self._states.get(s)
        if sid is None:
            sid = len(self._sets)
            self._states[s] = sid
            self._sets.append(s)
        return sid

    def _step(self, sid: int, ch: str) -> int:
        s = self._sets[sid]
        nxt = [pc + 1 for pc in s if self.code[pc][0] == "char" and self.code[pc][1](ch)]  # type: ignore[operator]
        return self._intern(self._closure(nxt, at_begin=False))

    def fullmatch(self, text: str) -> bool:
        if len(self._sets) > self.MAX_STATES:  # bounded memory: build the cache again
            self._states.clear()
            self._sets.clear()
            self._next.clear()
            self._accept.clear()
            self._start = None
        sid = self._start
        if sid is None:  # computed once per cache, not per text: the walk matches every path
            sid = self._start = self._intern(self._closure([0], at_begin=True))
        for ch in text:
            nid = self._next.get((sid, ch))
            if nid is None:
                nid = self._next[(sid, ch)] = self._step(sid, ch)
            sid = nid
            if not self._sets[sid]:
                return False
        acc = self._accept.get(sid) if text else None
        if acc is None:
            end = self._closure(list(self._sets[sid]), at_begin=not text, at_end=True)
            acc = any(self.code[pc][0] == "match" for pc in end)
            if text:
                self._accept[sid] = acc
        return acc
