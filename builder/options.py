"""Typed options of the library's operations (buildah's from, run, copy/add,
config, commit, pull and push), one frozen dataclass per verb.

The CLI converts flags into these; a Python caller builds them directly. The
defaults are buildah's. Fields that buildah takes as repeated flags are
tuples of strings in the flag's syntax (``KEY=VALUE``, ``KEY-`` to remove).
Where work runs (store, driver, isolation, OCI runtime) is not an option of a
verb but of the ``Workspace`` every operation takes first. The options of a
Dockerfile build are ``builder.build.options.BuildOptions``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from builder.image.registry.options import RegistryOptions

#: pull policies (buildah's ``--pull``): always, missing (default), never, newer
PULL_POLICIES = ("always", "missing", "never", "newer")


@dataclass(frozen=True)
class PullOptions:
    """``bale pull`` (buildah pull): how to fetch an image into the store.

    ``platform``: ``OS/ARCH[/VARIANT]`` to pick out of an index (None: this machine's).
    ``quiet``: no progress on stderr."""
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    platform: str | None = None
    quiet: bool = True


@dataclass(frozen=True)
class PushOptions:
    """``bale push`` (buildah push): how to copy a store image to a location.

    ``image_format``: ``oci`` or ``docker`` manifest and media types (None: as stored)."""
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    image_format: str | None = None
    quiet: bool = True


@dataclass(frozen=True)
class FromOptions:
    """``bale from`` (buildah from): a working container over an image.

    ``name``: the container's name (None: IMAGE-working-container, numbered when taken).
    ``pull``: one of PULL_POLICIES (``true`` = always, ``false`` = missing are accepted)."""
    name: str | None = None
    pull: str = "missing"
    platform: str | None = None
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    quiet: bool = True


@dataclass(frozen=True)
class RunOptions:
    """``bale run`` (buildah run): one command in a working container.

    ``env``: ``K=V`` (``K`` alone: this process's value); ``workdir``/``user``: override the
    image's; ``network``: ``host`` or ``none``; ``volumes``: ``SRC:DST[:ro]``; ``mounts``:
    ``type=bind|tmpfs,source=..,destination=..[,ro]`` (buildah's --volume and --mount syntax)."""
    env: tuple[str, ...] = ()
    workdir: str | None = None
    user: str | None = None
    network: str = "host"
    hostname: str | None = None
    volumes: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()


@dataclass(frozen=True)
class CopyOptions:
    """``bale copy`` / ``bale add`` (buildah copy/add).

    ``chown``: ``USER[:GROUP]`` (names resolved in the container); ``chmod``: octal mode;
    ``copy_from``: another working container or an image to copy from (``--from``);
    ``contextdir``: directory relative sources resolve in and must stay in (None: the current
    directory); ``add``: extract local archives and fetch URLs; ``checksum``: expected
    ``sha256:HEX`` of a URL source."""
    chown: str | None = None
    chmod: str | None = None
    copy_from: str | None = None
    contextdir: str | None = None
    add: bool = False
    checksum: str | None = None
    quiet: bool = True
    #: --exclude patterns (Dockerfile COPY --exclude: file names, and paths inside directory sources)
    excludes: tuple[str, ...] = ()
    #: --parents: each source keeps its directory path (relative to the context) under DEST
    parents: bool = False


@dataclass(frozen=True)
class ConfigOptions:
    """``bale config`` (buildah config): edits of the image configuration; None leaves a field.

    ``cmd``/``entrypoint``/``healthcheck``: a JSON array or a shell string ("" clears,
    healthcheck ``NONE`` disables); ``env``/``labels``/``annotations``: ``K=V`` sets, ``K-``
    removes; ``ports``: ``PORT[/PROTO]`` (``PORT-`` removes); ``volumes``: ``PATH`` (``PATH-``
    removes); ``healthcheck_*``: Go durations (``30s``, ``1m30s``); ``shell``: a JSON array;
    ``created_by``/``comment``/``history_comment``: history of the next commit."""
    cmd: str | None = None
    entrypoint: str | None = None
    env: tuple[str, ...] = ()
    workingdir: str | None = None
    user: str | None = None
    labels: tuple[str, ...] = ()
    annotations: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str | None = None
    healthcheck: str | None = None
    healthcheck_interval: str | None = None
    healthcheck_timeout: str | None = None
    healthcheck_start_period: str | None = None
    healthcheck_start_interval: str | None = None
    healthcheck_retries: int | None = None
    shell: str | None = None
    onbuild: tuple[str, ...] = ()
    author: str | None = None
    created_by: str | None = None
    comment: str | None = None
    history_comment: str | None = None
    arch: str | None = None
    os: str | None = None
    variant: str | None = None
    hostname: str | None = None
    domainname: str | None = None


@dataclass(frozen=True)
class CommitOptions:
    """``bale commit`` (buildah commit).

    ``squash``: all layers, the base's included, as one; ``timestamp``: seconds since the
    epoch for created times and file mtimes (None: $SOURCE_DATE_EPOCH, else now);
    ``image_format``: ``oci`` or ``docker``; ``compression``: ``gzip``, ``zstd`` or ``none``;
    ``registry``: used when the destination is a registry (``docker://``)."""
    squash: bool = False
    timestamp: int | None = None
    image_format: str = "oci"
    compression: str = "gzip"
    compression_level: int | None = None
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    quiet: bool = True
