"""Options of a Dockerfile build (`bale bud`), parsed from buildah's flag syntax.
Plain data: the CLI fills it, the executor reads it."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import UsageError
from builder.image.registry.options import RegistryOptions

OUTPUT_TYPES = ("oci", "oci-archive", "docker-archive", "local", "tar", "registry", "image")


@dataclass(frozen=True)
class OutputSpec:
    type: str  # one of OUTPUT_TYPES
    dest: str  # directory, file, or image reference for registry


@dataclass(frozen=True)
class SecretSpec:
    id: str
    src: str | None = None
    env: str | None = None

    def read(self) -> bytes:
        if self.env is not None:
            if self.env not in os.environ:
                raise UsageError(f"--secret id={self.id}: environment variable {self.env} is not set")
            return os.environ[self.env].encode()
        try:
            return Path(self.src or "").read_bytes()
        except OSError as exc:
            raise UsageError(f"--secret id={self.id}: cannot read {self.src}: {exc.strerror}") from None


@dataclass(frozen=True)
class BuildOptions:
    """What to build and where the result goes (buildah bud's flags; defaults are buildah's).

    ``context``: a directory, a tar file, ``-`` or a git URL; ``dockerfile``: a path, ``-`` for
    stdin, None for CONTEXT/Dockerfile (else Containerfile); ``tags``: store names, or any
    transport (``docker://``, ``oci:``, ...) to push to; ``timestamp``: seconds since the epoch
    for created times and file mtimes; ``outputs``: OutputSpec of type oci, oci-archive,
    docker-archive, registry, tar or local; ``isolation``: overrides the Workspace's for this
    build; ``jobs``: stages built in parallel."""
    context: str = "."
    dockerfile: str | None = None  # path, "-" for stdin, None = CONTEXT/Dockerfile (or Containerfile)
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    layers: bool = False
    no_cache: bool = False
    pull: str = "missing"
    squash: bool = False
    timestamp: int | None = None
    image_format: str = "oci"
    compression: str = "gzip"
    compression_level: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    iidfile: str | None = None
    digestfile: str | None = None
    outputs: list[OutputSpec] = field(default_factory=list)
    push: bool = False
    secrets: dict[str, SecretSpec] = field(default_factory=dict)
    build_contexts: dict[str, str] = field(default_factory=dict)
    platform: str | None = None
    network: str = "host"
    quiet: bool = False
    progress: str = "auto"
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    isolation: str | None = None
    remove_intermediate: bool = True
    jobs: int = 2
    ignorefile: str | None = None  # --ignorefile: instead of .containerignore / .dockerignore
    #: -v/--volume SRC:DST[:ro] bound into every RUN (not part of the cache key, as in buildah)
    volumes: tuple[str, ...] = ()
    #: --add-host HOST:IP lines added to every RUN's /etc/hosts
    add_hosts: tuple[str, ...] = ()
    #: --env K=V set and --unsetenv K removed in the final image's Env
    env: dict[str, str] = field(default_factory=dict)
    unsetenv: tuple[str, ...] = ()
    #: --cache-from REPO (repeatable) and --cache-to REPO: the remote layer cache (with layers=True)
    cache_from: tuple[str, ...] = ()
    cache_to: str | None = None


def _kv_fields(text: str, what: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        if not part:
            continue
        k, sep, v = part.partition("=")
        if not sep:
            raise UsageError(f"invalid {what} {text!r}: expected key=value pairs")
        out[k.strip()] = v
    return out


def parse_output(text: str) -> OutputSpec:
    """``type=oci,dest=DIR`` (buildah/BuildKit) or a bare ``DIR`` (= type=local)."""
    if "=" not in text:
        return OutputSpec("local", text)
    f = _kv_fields(text, "--output")
    typ = f.get("type", "local")
    if typ not in OUTPUT_TYPES:
        raise UsageError(f"invalid --output {text!r}: unknown type {typ!r} (oci, oci-archive, docker-archive, "
                         "local, tar, registry)")
    dest = f.get("dest") or f.get("name") or ""
    if not dest:
        raise UsageError(f"invalid --output {text!r}: dest= is required")
    return OutputSpec(typ, dest)


def parse_secret(text: str) -> SecretSpec:
    f = _kv_fields(text, "--secret")
    sid = f.get("id")
    if not sid:
        raise UsageError(f"invalid --secret {text!r}: id= is required")
    src, env = f.get("src") or f.get("source"), f.get("env")
    typ = f.get("type")
    if typ == "env" and not env:
        env = src or sid
        src = None
    if not src and not env:
        if sid in os.environ:
            env = sid
        else:
            src = sid
    if src and not os.path.isfile(src):
        raise UsageError(f"invalid --secret {text!r}: {src} is not a file")
    return SecretSpec(sid, src, env)


def parse_build_args(items: tuple[str, ...] | list[str], files: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
    """``K=V``; ``K`` alone takes the value from the environment (skipped if unset);
    --build-arg-file holds K=V lines with # comments."""
    out: dict[str, str] = {}
    for path in files:
        try:
            text = Path(path).read_bytes().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
        except OSError as exc:
            raise UsageError(f"--build-arg-file {path}: {exc.strerror}") from None
        for n, line in enumerate(text.split("\n"), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if any("\udc80" <= c <= "\udcff" for c in line) or "\x00" in line:
                raise UsageError(f"{path}:{n}: not UTF-8 text (or a NUL byte)")
            k, sep, v = line.partition("=")
            if not k.strip():
                raise UsageError(f"{path}:{n}: expected KEY=VALUE")
            if sep:
                out[k.strip()] = v
            elif k.strip() in os.environ:
                out[k.strip()] = os.environ[k.strip()]
    for item in items:
        k, sep, v = item.partition("=")
        if not k:
            raise UsageError(f"invalid --build-arg {item!r}")
        if sep:
            out[k] = v
        elif k in os.environ:
            out[k] = os.environ[k]
    return out


def parse_kv_list(items: tuple[str, ...] | list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not k:
            raise UsageError(f"invalid {what} {item!r}: expected KEY=VALUE")
        out[k] = v
    return out


def parse_build_contexts(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"invalid --build-context {item!r}: expected NAME=DIR or NAME=docker-image://REF")
        out[name] = value
    return out
