"""Hostile layer archives (containerd's TestBreakouts is the model): each tries
to write outside the directory it is applied to. ``ESCAPES`` maps a name to
a builder taking the absolute path of a directory outside the target that the
archive aims at, and returning the tar bytes."""
from __future__ import annotations

import io
import os
import tarfile
from typing import Callable


def _tar(entries: list[tuple[str, str, str]]) -> bytes:
    """(name, kind, payload): kind file|dir|symlink|hardlink|opaque-wh."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, payload in entries:
            ti = tarfile.TarInfo(name)
            ti.mode = 0o755 if kind == "dir" else 0o644
            if kind == "file":
                data = payload.encode()
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
                continue
            ti.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            ti.linkname = payload
            t.addfile(ti)
    return buf.getvalue()


def _rel(outside: str, depth: int = 12) -> str:
    return "../" * depth + outside.lstrip("/")


ESCAPES: dict[str, Callable[[str], bytes]] = {
    "absolute-path": lambda o: _tar([(f"{o}/abs", "file", "x")]),
    "dotdot-path": lambda o: _tar([(_rel(o) + "/dotdot", "file", "x")]),
    "symlink-abs-then-file": lambda o: _tar([("evil", "symlink", o), ("evil/through", "file", "x")]),
    "symlink-rel-then-file": lambda o: _tar([("evil", "symlink", _rel(o)), ("evil/through", "file", "x")]),
    "symlink-dotdot-dir": lambda o: _tar([("up", "symlink", ".."), ("up/up/up/escaped", "file", "x")]),
    "symlink-chain": lambda o: _tar([("a", "symlink", "b"), ("b", "symlink", o), ("a/chained", "file", "x")]),
    "nested-symlink-dir": lambda o: _tar([("d", "dir", ""), ("d/l", "symlink", "../../../../" + o.lstrip("/")),
                                          ("d/l/nested", "file", "x")]),
    "hardlink-abs": lambda o: _tar([("hl", "hardlink", f"{o}/victim")]),
    "hardlink-dotdot": lambda o: _tar([("hl", "hardlink", _rel(o) + "/victim")]),
    "hardlink-through-symlink": lambda o: _tar([("s", "symlink", o), ("hl", "hardlink", "s/victim")]),
    "dir-replaced-by-symlink": lambda o: _tar([("d", "dir", ""), ("d", "symlink", o), ("d/after", "file", "x")]),
    "whiteout-dotdot": lambda o: _tar([(_rel(o) + "/.wh.victim", "file", "")]),
    "whiteout-through-symlink": lambda o: _tar([("s", "symlink", o), ("s/.wh.victim", "file", "")]),
    "opaque-through-symlink": lambda o: _tar([("s", "symlink", o), ("s/.wh..wh..opq", "file", "")]),
    "symlink-overwrite-victim": lambda o: _tar([("v", "symlink", f"{o}/victim"), ("v", "file", "overwritten")]),
    "file-through-abs-symlink-parent": lambda o: _tar([("etc", "symlink", o), ("etc/passwd", "file", "x")]),
}


def snapshot_tree(path: str) -> dict[str, tuple]:
    """Everything under ``path`` with content and metadata, to prove nothing changed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = open(p, "rb").read() if os.path.isfile(p) and not os.path.islink(p) else b""
            out[p] = (st.st_mode, st.st_size, st.st_nlink, data)
    return out
