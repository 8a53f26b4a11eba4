"""Build contexts written for the unprivileged test user (tests/fixtures/users.py), and a content
view of a host tree to tell whether a build touched it."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def user_context(u: Any, base: Path, name: str, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    """``base/name`` made with its Dockerfile and ``files`` (relative path -> text, parents made),
    every entry owned by the user ``u`` (lchown): the context directory."""
    ctx = base / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for rel, text in (files or {}).items():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(text)
    for p in [ctx, *ctx.rglob("*")]:
        os.lchown(p, u.uid, u.gid)
    return ctx


def tree_view(path: Path) -> dict[str, str]:
    """Every entry under ``path`` (relative name, "." for ``path``) with its content's sha256 hex, or
    "dir 0o40755"-style for a directory: an independent before/after view."""
    out = {}
    for p in sorted([path, *path.rglob("*")]):
        rel = str(p.relative_to(path))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else f"dir {oct(p.stat().st_mode)}"
    return out
