"""Paths confined to a root directory, with chroot semantics: every symlink
met on the way is resolved as if ``root`` were ``/``, and ``..`` never climbs
above it (buildah's copier and securejoin work the same way)."""
from __future__ import annotations

import os
import posixpath
from pathlib import Path

MAX_LINKS = 255


class PathEscape(Exception):
    """Too many symlinks while resolving a confined path."""


def secure_join(root: Path | str, path: str, *, follow_final: bool = True) -> Path:
    """``root``/``path`` with symlinks resolved inside ``root``. The result always lies
    under ``root``; missing components are kept as they are (the result may not exist).
    With ``follow_final=False`` a symlink in the last component is not followed."""
    root = Path(root)
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if (parts or follow_final) and os.path.islink(candidate):
            links += 1
            if links > MAX_LINKS:
                raise PathEscape(f"{path}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def container_path(root: Path | str, host_path: Path | str) -> str:
    """The in-container absolute path of a host path under ``root``."""
    rel = os.path.relpath(host_path, root)
    return "/" if rel == "." else "/" + rel


def clean(path: str) -> str:
    """An absolute, normalised container path (no trailing slash, no ``..`` above /)."""
    return posixpath.normpath("/" + path).replace("//", "/")
