"""The reference image of a comparison: a context built by root on the host (no user namespace,
so its RUN steps really chown), and the manifest digest an OCI layout names, to compare builds by."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.users import REPO


def layout_digest(layout: Path) -> str:
    """The manifest digest ("sha256:...") an OCI layout's index.json names; AssertionError unless it
    names exactly one image."""
    manifests = json.loads((layout / "index.json").read_text())["manifests"]
    assert len(manifests) == 1, manifests
    return str(manifests[0]["digest"])


def root_build(base: Path, layout: Path, name: str, ctx: Path | str, epoch: str, ref: str = "latest",
               python: str = sys.executable) -> tuple[Path, str]:
    """Build ``ctx`` (a context directory, or a Dockerfile's text written into ``base/ctx``) as this
    process's user (root) with SOURCE_DATE_EPOCH ``epoch`` and a store under ``base``: ``layout``'s
    :latest image pulled and tagged ``name`` first (the context's FROM), the image written to the OCI
    layout ``base/out`` as ``ref`` with ``python -m builder.cli.main``. Returns (``base/out``, the
    build's stdout); AssertionError when the tag or the build fails."""
    if isinstance(ctx, str):
        dockerfile, ctx = ctx, base / "ctx"
        ctx.mkdir(parents=True)
        (ctx / "Dockerfile").write_text(dockerfile)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SOURCE_DATE_EPOCH": epoch}

    def bale(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, "-m", "builder.cli.main", "--root", str(base / "store"), *args],
                              capture_output=True, text=True, env=env, timeout=600, cwd="/tmp")
    image = bale("pull", "-q", f"oci:{layout}:latest").stdout.strip()
    assert bale("tag", image, name).returncode == 0
    r = bale("bud", "-t", f"oci:{base}/out:{ref}", str(ctx))
    assert r.returncode == 0, r.stderr
    return base / "out", r.stdout
