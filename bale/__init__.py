"""bale as a Python library: build OCI images from Dockerfiles, or verb by verb
as buildah's scripted builds do, without a daemon and without root.

Every operation takes a :class:`Workspace` first (the store, the snapshot
driver, the isolation and the OCI runtime work uses; nothing is read from the
environment but the store's default location), then its arguments and one
frozen options object whose defaults are buildah's::

    import bale

    ws = bale.Workspace("/tmp/store")                          # created on first use
    base = bale.pull(ws, "oci:/tmp/busybox:latest")            # ImageRecord
    c = bale.from_image(ws, base.id, bale.FromOptions(name="work"))
    bale.run(ws, c.name, ["sh", "-c", "echo hi > /hi"])        # RunFailed on a non-zero exit
    bale.copy(ws, c.name, ["app.sh"], "/usr/local/bin/", bale.CopyOptions(contextdir="src", chmod="755"))
    bale.config(ws, c.name, bale.ConfigOptions(cmd='["/usr/local/bin/app.sh"]', labels=("v=1",)))
    img = bale.commit(ws, c.name, "localhost/app:1")
    bale.remove(ws, [c.name])
    res = bale.build(ws, bale.BuildOptions(context="src", tags=["localhost/app:2"]))
    bale.push(ws, "localhost/app:2", "oci:/tmp/out:2")

Operations: :func:`build` (``bale bud``), :func:`pull`, :func:`push`,
:func:`from_image`, :func:`run`, :func:`copy`, :func:`config`, :func:`commit`,
:func:`remove`. Errors are :class:`BaleError` subclasses with a one-line
message naming the file, line, image or container; ``exit_code`` is what the
CLI exits with (1, or 2 for :class:`UsageError`).

Names are loaded on first use (module ``__getattr__``, PEP 562), so
``import bale`` costs nothing until an operation is touched.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from builder import __version__

if TYPE_CHECKING:
    from builder.build.builder import BuildResult
    from builder.build.export import ExportError
    from builder.build.options import BuildOptions, OutputSpec, SecretSpec
    from builder.errors import (BaleError, BuildError, ContainerError, DigestMismatch, FormatError, ImageNotFound,
                                RegistryError, RunFailed, SandboxError, StoreError, UsageError)
    from builder.image.imagecopy import CopyResult
    from builder.image.pull import pull, push
    from builder.image.registry.options import RegistryOptions
    from builder.image.store import ImageRecord
    from builder.options import (CommitOptions, ConfigOptions, CopyOptions, FromOptions, PullOptions, PushOptions,
                                 RunOptions)
    from builder.scripted import commit, from_image
    from builder.scripted import configure as config
    from builder.scripted import copy_into as copy
    from builder.scripted import remove_containers as remove
    from builder.scripted import run_in as run
    from builder.workspace.container import ContainerState
    from builder.workspace.workspace import Workspace

#: public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    "Workspace": ("builder.workspace.workspace", "Workspace"),
    "BuildOptions": ("builder.build.options", "BuildOptions"),
    "OutputSpec": ("builder.build.options", "OutputSpec"),
    "SecretSpec": ("builder.build.options", "SecretSpec"),
    "BuildResult": ("builder.build.builder", "BuildResult"),
    "RegistryOptions": ("builder.image.registry.options", "RegistryOptions"),
    "FromOptions": ("builder.options", "FromOptions"),
    "RunOptions": ("builder.options", "RunOptions"),
    "CopyOptions": ("builder.options", "CopyOptions"),
    "ConfigOptions": ("builder.options", "ConfigOptions"),
    "CommitOptions": ("builder.options", "CommitOptions"),
    "PullOptions": ("builder.options", "PullOptions"),
    "PushOptions": ("builder.options", "PushOptions"),
    "pull": ("builder.image.pull", "pull"),
    "push": ("builder.image.pull", "push"),
    "CopyResult": ("builder.image.imagecopy", "CopyResult"),
    "ImageRecord": ("builder.image.store", "ImageRecord"),
    "ContainerState": ("builder.workspace.container", "ContainerState"),
    "from_image": ("builder.scripted", "from_image"),
    "run": ("builder.scripted", "run_in"),
    "copy": ("builder.scripted", "copy_into"),
    "config": ("builder.scripted", "configure"),
    "commit": ("builder.scripted", "commit"),
    "remove": ("builder.scripted", "remove_containers"),
    "ExportError": ("builder.build.export", "ExportError"),
    **{name: ("builder.errors", name) for name in (
        "BaleError", "UsageError", "StoreError", "ImageNotFound", "FormatError", "DigestMismatch", "RegistryError",
        "SandboxError", "ContainerError", "RunFailed", "BuildError")},
}

__all__ = sorted([*_EXPORTS, "build", "__version__"])


def build(workspace: "Workspace", options: "BuildOptions") -> "BuildResult":
    """Build a Dockerfile, as ``bale bud`` (buildah bud) does.

    ``options.context`` is the build context (a directory, a tar file, ``-`` or a git URL),
    ``options.dockerfile`` the Dockerfile (None: CONTEXT/Dockerfile, else Containerfile). The
    image is written to the workspace's store under ``options.tags`` (transport tags such as
    ``docker://`` or ``oci:`` are pushed there instead) and to each of ``options.outputs``.
    Steps follow Docker/BuildKit's semantics (BuildKit's dockerfile2llb is the spec); with
    ``options.layers`` each step is cached in the store.

    Returns a BuildResult: ``image_id`` (``sha256:HEX`` of the config), ``manifest_digest``,
    ``record`` (the store record; None when nothing stays in the store).
    Raises BuildError (a step failed: ``FILE:LINE: INSTRUCTION: cause``), UsageError (bad
    options), ImageNotFound (a FROM image), RegistryError, ExportError (an output)."""
    from builder.build.builder import build as _build
    return _build(workspace, options)


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'bale' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
