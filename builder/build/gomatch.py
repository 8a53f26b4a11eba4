"""COPY/ADD wildcards as BuildKit resolves them: Go's ``filepath.Match`` (no
special case for a leading dot; ``*`` and ``?`` never match ``/``; ``[^...]``
negates; ``\\`` escapes) applied by fsutil's ``copy.ResolveWildcards``
(copy/copy.go: the pattern is split at its first component holding a
wildcard, the part before it is resolved inside the root, the rest is matched
against every path below it in lexical walk order, and a matched directory is
not descended into).
"""
from __future__ import annotations

import os
import re
import stat
from functools import lru_cache
from pathlib import Path

from snapshotter.safepath import secure_join


def has_wildcards(name: str) -> bool:
    """fsutil containsWildcards: ``*``, ``?`` or ``[`` not escaped by a backslash."""
    i = 0
    while i < len(name):
        if name[i] == "\\":
            i += 2
            continue
        if name[i] in "*?[":
            return True
        i += 1
    return False


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str] | None:
    """The regex for a Go filepath.Match pattern; None for a malformed one (ErrBadPattern)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i + 1 >= n:
                return None
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            i += 1
            neg = i < n and pattern[i] == "^"
            if neg:
                i += 1
            ranges: list[str] = []
            while True:
                if i >= n:
                    return None
                if pattern[i] == "]" and ranges:
                    break
                lo, i = _class_char(pattern, i)
                if lo is None:
                    return None
                hi: str | None = lo
                if i < n and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                    if hi is None or hi < lo:
                        return None
                assert hi is not None
                ranges.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
            out.append("[" + ("^/" if neg else "") + "".join(ranges) + "]")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _class_char(pattern: str, i: int) -> tuple[str | None, int]:
    if i >= len(pattern) or pattern[i] in "-]":
        return None, i
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            return None, i
    return pattern[i], i + 1


def match(pattern: str, name: str) -> bool:
    """Go's filepath.Match(pattern, name) on Linux; a malformed pattern matches nothing
    (ResolveWildcards ignores the error)."""
    rx = _compile(pattern)
    return bool(rx is not None and rx.fullmatch(name))


def split_wildcards(path: str) -> tuple[str, str]:
    """fsutil splitWildcards: (components before the first wildcard one, the rest)."""
    parts = [p for p in path.split("/") if p]
    for i, p in enumerate(parts):
        if has_wildcards(p):
            return "/" + "/".join(parts[:i]), "/".join(parts[i:])
    return "/" + "/".join(parts), ""


def resolve_wildcards(root: Path, src: str) -> list[str]:
    """Paths (absolute inside ``root``) that ``src`` names, lexically ordered as filepath.Walk
    visits them. Without a wildcard ``src`` itself is returned, existing or not."""
    base, rest = split_wildcards(src)
    if not rest:
        return [base]
    host = secure_join(root, base)
    out: list[str] = []
    prefix = base.rstrip("/")

    def walk(dirpath: Path, rel: str) -> None:
        try:
            names = sorted(os.listdir(dirpath))
        except FileNotFoundError:
            return
        except NotADirectoryError:
            return
        for name in names:
            sub = f"{rel}/{name}" if rel else name
            full = dirpath / name
            is_dir = stat.S_ISDIR(os.lstat(full).st_mode)
            if match(rest, sub):
                out.append(f"{prefix}/{sub}")
                continue
            if is_dir and sub.count("/") < rest.count("/"):
                walk(full, sub)

    try:
        walk(host, "")
    except PermissionError as exc:
        raise PermissionError(exc.errno, exc.strerror, src) from None
    return out
