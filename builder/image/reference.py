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
# containers-registries.conf(5) as containers/image reads it (pkg/sysregistriesv2):
# the main file is $CONTAINERS_REGISTRIES_CONF (or $REGISTRIES_CONFIG_PATH), else
# ~/.config/containers/registries.conf when it exists (then only the user's
# registries.conf.d), else /etc/containers/registries.conf with /etc's and the user's
# registries.conf.d; drop-ins (*.conf, name order) replace [[registry]] entries of the same
# prefix, merge [aliases] and replace the other keys they set. Aliases in the
# short-name-aliases.conf cache (~/.cache/containers, /var/cache/containers for root) win.
# $BALE_REGISTRIES_CONF_DIR names the one drop-in directory to read instead (as
# containers/image's SystemContext.SystemRegistriesConfDirPath does).
SHORT_NAME_MODES = ("enforcing", "permissive", "disabled")


@dataclass(frozen=True)
class Endpoint:
    """Where a [[registry]] or one of its [[registry.mirror]]s is reached."""
    location: str
    insecure: bool = False
    #: "" (all), "digest-only" or "tag-only" (mirrors only)
    pull_from_mirror: str = ""


@dataclass(frozen=True)
class RegistryEntry:
    prefix: str
    endpoint: Endpoint
    blocked: bool = False
    mirrors: tuple[Endpoint, ...] = ()
    mirror_by_digest_only: bool = False


@dataclass(frozen=True)
class RegistriesConf:
    registries: tuple[RegistryEntry, ...] = ()
    #: None when no file sets unqualified-search-registries
    search: tuple[str, ...] | None = None
    aliases: tuple[tuple[str, str, str], ...] = ()  # (short name, target, file)
    short_name_mode: str = "permissive"
    sources: tuple[str, ...] = ()

    def alias(self, name: str) -> tuple[str, str] | None:
        """(target, file) of the last alias for ``name``."""
        hit = None
        for short, target, origin in self.aliases:
            if short == name:
                hit = (target, origin)
        return hit


def _main_conf_and_dirs() -> tuple[Path, list[Path]]:
    home = Path(os.environ.get("HOME") or Path.home())
    user_file = home / ".config" / "containers" / "registries.conf"
    user_dir = home / ".config" / "containers" / "registries.conf.d"
    env = os.environ.get("CONTAINERS_REGISTRIES_CONF") or os.environ.get("REGISTRIES_CONFIG_PATH")
    explicit_dir = os.environ.get("BALE_REGISTRIES_CONF_DIR")
    if env:
        main = Path(env)
    elif user_file.exists():
        return user_file, [Path(explicit_dir) if explicit_dir else user_dir]
    else:
        main = Path("/etc/containers/registries.conf")
    if explicit_dir:
        return main, [Path(explicit_dir)]
    return main, [Path("/etc/containers/registries.conf.d"), user_dir]


def _alias_cache_path() -> Path:
    if os.geteuid() == 0:
        return Path("/var/cache/containers/short-name-aliases.conf")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path(os.environ.get("HOME") or Path.home()) / ".cache")
    return cache / "containers" / "short-name-aliases.conf"


def _read_toml(p: Path) -> dict[str, Any] | None:
    import tomllib
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{p}: cannot read registries.conf: {exc}") from None


def _endpoint(d: dict[str, Any], where: str) -> Endpoint:
    loc = str(d.get("location") or "").rstrip("/")
    pfm = str(d.get("pull-from-mirror") or "")
    if pfm not in ("", "all", "digest-only", "tag-only"):
        raise UsageError(f"{where}: unsupported pull-from-mirror value {pfm!r} for mirror {loc!r}")
    return Endpoint(loc, bool(d.get("insecure")), "" if pfm == "all" else pfm)


def _registries_of(data: dict[str, Any], where: str) -> list[RegistryEntry]:
    out = []
    v1 = data.get("registries")
    if isinstance(v1, dict):  # sysregistries v1: [registries.search|insecure|block] registries = [...]
        if data.get("registry") or data.get("unqualified-search-registries"):
            raise UsageError(f"{where}: mixing sysregistry v1/v2 is not supported")
        insecure = set((v1.get("insecure") or {}).get("registries") or [])
        block = set((v1.get("block") or {}).get("registries") or [])
        for host in sorted(insecure | block):
            out.append(RegistryEntry(str(host), Endpoint(str(host), host in insecure), host in block))
    for r in data.get("registry") or []:
        if not isinstance(r, dict):
            raise UsageError(f"{where}: [[registry]] entries must be tables")
        ep = _endpoint(r, where)
        prefix = str(r.get("prefix") or ep.location).rstrip("/")
        if not prefix:
            raise UsageError(f"{where}: a [[registry]] needs a location or a prefix")
        if not ep.location and not prefix.startswith("*."):
            raise UsageError(f"{where}: [[registry]] {prefix!r}: an empty location needs a *.example.com prefix")
        mirrors = tuple(_endpoint(m, where) for m in r.get("mirror") or [] if isinstance(m, dict))
        by_digest = bool(r.get("mirror-by-digest-only"))
        if by_digest and any(m.pull_from_mirror for m in mirrors):
            raise UsageError(f"{where}: [[registry]] {prefix!r}: mirror-by-digest-only and pull-from-mirror "
                             "cannot both be set")
        out.append(RegistryEntry(prefix, ep, bool(r.get("blocked")), mirrors, by_digest))
    return out


@functools.lru_cache(maxsize=8)
def _load(key: tuple[str, ...]) -> RegistriesConf:
    main, *dirs = (Path(k) for k in key[:-1])
    alias_cache = Path(key[-1])
    files = [main]
    for d in dirs:
        if d.is_dir():
            files += sorted(p for p in d.iterdir() if p.suffix == ".conf" and p.is_file())
    regs: dict[str, RegistryEntry] = {}
    search: tuple[str, ...] | None = None
    aliases: list[tuple[str, str, str]] = []
    mode = "permissive"
    sources = []
    for f in files:
        data = _read_toml(f)
        if data is None:
            continue
        sources.append(str(f))
        for entry in _registries_of(data, str(f)):
            regs[entry.prefix] = entry
        v1 = data.get("registries")
        usr = data.get("unqualified-search-registries")
        if usr is None and isinstance(v1, dict) and (v1.get("search") or {}).get("registries") is not None:
            usr = v1["search"]["registries"]
        if usr is not None:
            search = tuple(str(r) for r in usr)
        if "short-name-mode" in data:
            m = str(data["short-name-mode"])
            if m not in SHORT_NAME_MODES:
                raise UsageError(f"{f}: invalid short-name mode {m!r} (enforcing, permissive or disabled)")
            mode = m
        for short, target in (data.get("aliases") or {}).items():
            aliases.append((str(short), str(target), str(f)))
    cache = _read_toml(alias_cache)
    for short, target in ((cache or {}).get("aliases") or {}).items():
        aliases.append((str(short), str(target), str(alias_cache)))  # the cache wins: appended last
    return RegistriesConf(tuple(regs[k] for k in sorted(regs)), search, tuple(aliases), mode, tuple(sources))


def registries_conf() -> RegistriesConf:
    """The merged configuration (cached per set of paths)."""
    main, dirs = _main_conf_and_dirs()
    return _load((str(main), *(str(d) for d in dirs), str(_alias_cache_path())))


def unqualified_search_registries() -> list[str]:
    """Search registries for short names; docker.io when no file sets any (Docker's behaviour)."""
    regs = registries_conf().search
    return list(regs) if regs else [DOCKER_HUB]


def _match_len(ref: str, prefix: str) -> int:
    """containers/image refMatchingPrefix: length of ``prefix`` in ``ref`` or -1; ``*.example.com``
    matches subdomains of the host only."""
    if prefix.startswith("*."):
        i = ref.find(prefix[1:])
        if i == -1 or "/" in ref[:i]:
            return -1
        i += len(prefix) - 1
        return i if i == len(ref) or ref[i] in ":/@" else -1
    if len(ref) < len(prefix) or not ref.startswith(prefix):
        return -1
    if len(ref) == len(prefix) or ref[len(prefix)] in ":/@":
        return len(prefix)
    return -1


def find_registry(ref: str) -> RegistryEntry | None:
    """The [[registry]] with the longest prefix matching ``ref`` (a host, HOST/REPO or a full reference)."""
    best, best_len = None, -1
    for entry in registries_conf().registries:
        if _match_len(ref, entry.prefix) != -1 and len(entry.prefix) > best_len:
            best, best_len = entry, len(entry.prefix)
    return best


def registry_is_insecure(host: str) -> bool:
    entry = find_registry(host)
    if entry is not None and entry.endpoint.location == host:
        return entry.endpoint.insecure
    for e in registries_conf().registries:  # a mirror's own insecure flag
        for m in e.mirrors:
            if m.location == host or m.location.split("/", 1)[0] == host:
                return m.insecure
    return bool(entry and entry.endpoint.insecure)


def registry_is_blocked(host: str) -> bool:
    entry = find_registry(host)
    return bool(entry and entry.blocked)


def check_not_blocked(ref: str) -> None:
    """RegistryError naming the registries.conf files when ``ref`` (host or reference) is blocked."""
    entry = find_registry(ref)
    if entry is not None and entry.blocked:
        from builder.errors import RegistryError
        where = " or ".join(registries_conf().sources) or "registries.conf"
        raise RegistryError(f"{ref}: registry {entry.prefix} is blocked in {where}")


@dataclass(frozen=True)
class PullSource:
    reference: ImageReference
    insecure: bool
    mirror: bool


def pull_sources(ref: ImageReference) -> list[PullSource]:
    """Where to pull ``ref`` from, in order: its registry's mirrors (subject to
    mirror-by-digest-only / pull-from-mirror), then the registry's location, each with the
    prefix rewritten (containers/image Registry.PullSourcesFromReference)."""
    text = ref.name
    entry = find_registry(text)
    if entry is None:
        return [PullSource(ref, False, False)]
    check_not_blocked(text)
    digested = ref.digest is not None
    eps: list[tuple[Endpoint, bool]] = []
    for m in entry.mirrors:
        if entry.mirror_by_digest_only and not digested:
            continue
        if (m.pull_from_mirror == "digest-only" and not digested) or (m.pull_from_mirror == "tag-only" and digested):
            continue
        eps.append((m, True))
    eps.append((entry.endpoint, False))
    out = []
    n = _match_len(text, entry.prefix)
    for ep, is_mirror in eps:
        if not ep.location:
            out.append(PullSource(ref, ep.insecure, is_mirror))
            continue
        out.append(PullSource(parse_reference(ep.location + text[n:]), ep.insecure, is_mirror))
    return out


def resolve_short_name(text: str) -> list[ImageReference]:
    """Candidates for ``text`` in the order podman tries them (containers/image pkg/shortnames):
    a fully qualified name as it is; an [aliases] entry (with the given tag or digest); else
    each unqualified-search registry. With short-name-mode ``enforcing`` more than one
    candidate is a UsageError: bale never prompts (podman errors the same way without a TTY)."""
    text = text.removeprefix("docker://")
    if is_fully_qualified(text):
        return [parse_reference(text)]
    conf = registries_conf()
    name, tag_part = _split_tag_digest(text)
    hit = conf.alias(name)
    if hit is not None:
        target, origin = hit
        if not is_fully_qualified(target + "/x") or "/" not in target:
            raise UsageError(f"{origin}: alias {name!r} = {target!r}: not a fully qualified name")
        return [parse_reference(target + tag_part)]
    cands = [parse_reference(text, default_registry=reg) for reg in unqualified_search_registries()]
    if conf.short_name_mode == "enforcing" and len(cands) > 1:
        where = conf.sources[0] if conf.sources else "registries.conf"
        raise UsageError(f"short name {text!r} is ambiguous ({', '.join(c.name for c in cands)}): short-name-mode "
                         f"is enforcing in {where} and bale does not prompt; use a fully qualified name or an "
                         "[aliases] entry")
    return cands


def _split_tag_digest(text: str) -> tuple[str, str]:
    """("name", ":tag" / "@digest" / "") of a short name as typed."""
    if "@" in text:
        name, digest = text.split("@", 1)
        return name, "@" + digest
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = text.rsplit(":", 1)
        return name, ":" + tag
    return text, ""
