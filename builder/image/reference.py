"""Image references (distribution's grammar, Docker's normalisation) and the
parts of containers-registries.conf(5) bale honours: unqualified-search-registries
and per-registry ``insecure``."""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from builder.errors import UsageError

DOCKER_HUB = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_HOST_RE = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
                      r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")


@dataclass(frozen=True)
class ImageReference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repo_name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What the registry is asked for: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        if self.digest:
            return f"{self.repo_name}@{self.digest}"
        return f"{self.repo_name}:{self.tag or 'latest'}"

    def with_tag(self, tag: str) -> "ImageReference":
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> "ImageReference":
        return replace(self, digest=digest)

    def __str__(self) -> str:
        return self.name


def _split_host(text: str) -> tuple[str | None, str]:
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first, rest
    return None, text


def is_fully_qualified(text: str) -> bool:
    return _split_host(text)[0] is not None


def parse_reference(text: str, *, default_registry: str = DOCKER_HUB) -> ImageReference:
    """``busybox`` → docker.io/library/busybox:latest; UsageError naming ``text`` if malformed."""
    raw = text
    text = text.strip().removeprefix("docker://")
    if not text:
        raise UsageError("empty image reference")
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise UsageError(f"invalid image reference {raw!r}: bad digest {digest!r}")
    host, path = _split_host(text)
    tag = None
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise UsageError(f"invalid image reference {raw!r}: bad tag {tag!r}")
    if host is not None and not _HOST_RE.match(host):
        raise UsageError(f"invalid image reference {raw!r}: bad registry host {host!r}")
    registry = host or default_registry
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    if not _REPO_RE.match(path):
        hint = ": repository names must be lowercase" if path.lower() != path else ""
        raise UsageError(f"invalid image reference {raw!r}{hint}")
    if len(registry) + len(path) > 254:
        raise UsageError(f"invalid image reference {raw!r}: name too long")
    return ImageReference(registry, path, None if digest and not tag else (tag or "latest"), digest)


# --- registries.conf -------------------------------------------------------------
def _conf_paths() -> list[Path]:
    env = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    if env:
        return [Path(env)]
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [home / "containers" / "registries.conf", Path("/etc/containers/registries.conf")]


@functools.lru_cache(maxsize=8)
def _load_conf(key: tuple[str, ...]) -> dict[str, Any]:
    import tomllib
    for p in map(Path, key):
        try:
            with open(p, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            continue
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"{p}: cannot read registries.conf: {exc}") from None
        drop_in = p.parent / (p.name + ".d")
        if drop_in.is_dir():
            for extra in sorted(drop_in.glob("*.conf")):
                with open(extra, "rb") as fh:
                    more = tomllib.load(fh)
                data.setdefault("registry", []).extend(more.pop("registry", []))
                data.update(more)
        return data
    return {}


def registries_conf() -> dict[str, Any]:
    return _load_conf(tuple(str(p) for p in _conf_paths()))


def unqualified_search_registries() -> list[str]:
    regs = registries_conf().get("unqualified-search-registries")
    return [str(r) for r in regs] if isinstance(regs, list) and regs else [DOCKER_HUB]


def _registry_entry(host: str) -> dict[str, Any] | None:
    best, best_len = None, -1
    for entry in registries_conf().get("registry", []) or []:
        loc = str(entry.get("location") or entry.get("prefix") or "")
        if loc and (host == loc or host.startswith(loc + "/")) and len(loc) > best_len:
            best, best_len = entry, len(loc)
    return best


def registry_is_insecure(host: str) -> bool:
    entry = _registry_entry(host)
    return bool(entry and entry.get("insecure"))


def registry_is_blocked(host: str) -> bool:
    entry = _registry_entry(host)
    return bool(entry and entry.get("blocked"))


def resolve_short_name(text: str) -> list[ImageReference]:
    """Candidates for ``text`` in the order podman tries them."""
    text = text.removeprefix("docker://")
    if is_fully_qualified(text):
        return [parse_reference(text)]
    return [parse_reference(text, default_registry=reg) for reg in unqualified_search_registries()]
