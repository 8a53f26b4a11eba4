"""Names of images in the local store, as buildah and podman spell them.

A name committed without a registry lives under ``localhost/`` (buildah
commit ``myimage`` gives ``localhost/myimage:latest``); a short name given to
``from`` or ``push`` is looked up as given, under ``localhost/``, then under
the registries.conf alias target, then each unqualified-search registry
(``docker.io/library/busybox:latest``).
"""
from __future__ import annotations

import re

from builder.errors import BaleError, UsageError

_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")


def is_qualified(text: str) -> bool:
    """True when the first path component names a registry host."""
    first = text.split("/", 1)[0]
    return "/" in text and ("." in first or ":" in first or first == "localhost")


def split_tag(text: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of a reference, without normalising the repository."""
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
    return text, tag, digest


def store_name(text: str) -> str:
    """The full name an image given as ``text`` is recorded under."""
    repo, tag, digest = split_tag(text.strip())
    if not repo:
        raise UsageError(f"invalid image name {text!r}")
    host, _, rest = repo.partition("/") if is_qualified(repo) else ("localhost", "", repo)
    if not _NAME.match(rest.lower()) or rest != rest.lower():
        raise UsageError(f"invalid image name {text!r}: repository names are lowercase [a-z0-9._-/]")
    if tag is not None and not _TAG.match(tag):
        raise UsageError(f"invalid image name {text!r}: bad tag {tag!r}")
    name = f"{host}/{rest}"
    if digest:
        return f"{name}@{digest}"
    return f"{name}:{tag or 'latest'}"


def search_registries() -> list[str]:
    try:
        from builder.image.reference import unqualified_search_registries
        return list(unqualified_search_registries())
    except ImportError:  # pragma: no cover - reference module absent in partial checkouts
        return ["docker.io"]


def alias_target(short: str) -> str | None:
    """The registries.conf [aliases] target of a short name, if any (a bad config is left to pull)."""
    try:
        from builder.image.reference import registries_conf
        hit = registries_conf().alias(short)
    except BaleError:
        return None
    return hit[0] if hit else None


def lookup_candidates(text: str) -> list[str]:
    """Names to try in the store for ``text``, most specific first."""
    text = text.removeprefix("containers-storage:")
    out = [text]
    repo, tag, digest = split_tag(text)
    suffix = f"@{digest}" if digest else f":{tag or 'latest'}"
    if is_qualified(repo):
        out.append(repo + suffix)
    else:
        out.append(f"localhost/{repo}{suffix}")
        target = alias_target(repo)
        if target:
            out.append(target + suffix)
        for reg in search_registries():
            path = f"library/{repo}" if reg == "docker.io" and "/" not in repo else repo
            out.append(f"{reg}/{path}{suffix}")
    return list(dict.fromkeys(out))
