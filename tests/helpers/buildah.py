"""Debian's buildah as the second builder of a comparison: it builds a context rootless as the
unprivileged test user, from the busybox layout the tests make, and its image is read back with
the stdlib tar reader (oci_reader.flatten), never with bale's code.

RUN steps: ``--isolation chroot`` (buildah's default OCI isolation needs slirp4netns, which fails
here); the image is pushed with ``--format v2s2`` to ``dir:`` so a docker-format config (ONBUILD)
survives (buildah drops ONBUILD from OCI configs)."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

from tests.helpers.oci_reader import Entry, flatten


def read_dir(path: Path) -> tuple[dict[str, Any], dict[str, Any], list[bytes]]:
    """The manifest, config and (decompressed) layers of a containers/image ``dir:`` copy."""
    manifest = json.loads((path / "manifest.json").read_text())
    blob = lambda d: (path / d.split(":", 1)[1]).read_bytes()  # noqa: E731
    config = json.loads(blob(manifest["config"]["digest"]))
    layers = []
    for layer in manifest["layers"]:
        raw = blob(layer["digest"])
        layers.append(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    return manifest, config, layers


class Buildah:
    """buildah with a store of its own under ``work``, holding ``layout`` (an OCI layout, ref
    ``latest``) as ``busybox``. ``user`` is tests.fixtures.users.TestUser."""

    def __init__(self, user: Any, work: Path, layout: Path) -> None:
        self.user, self.work = user, work
        self.argv = ["buildah", "--root", str(work / "bh-root"), "--runroot", str(work / "bh-run"),
                     "--storage-driver", "vfs"]
        image = user.run([*self.argv, "pull", "-q", f"oci:{layout}:latest"]).stdout.strip().splitlines()[-1]
        user.run([*self.argv, "tag", image, "busybox"])

    def build(self, ctx: Path, name: str, *args: str) -> tuple[dict[str, Any], dict[str, Entry], list[bytes]]:
        """``buildah bud ARGS`` of ``ctx``; returns the image's config, flattened filesystem and layers."""
        self.user.run([*self.argv, "bud", "-q", "--isolation", "chroot", *args, "-t", name, str(ctx)], timeout=600)
        out = self.work / f"{name}-bh-dir"
        shutil.rmtree(out, ignore_errors=True)
        self.user.run([*self.argv, "push", "-q", "--format", "v2s2", name, f"dir:{out}"])
        _, config, layers = read_dir(out)
        return config, flatten(layers), layers

    def close(self) -> None:
        self.user.run([*self.argv, "rmi", "-a", "-f"], check=False)
