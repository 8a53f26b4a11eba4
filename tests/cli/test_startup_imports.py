"""Start-up of `bale from scratch` (issue 10): it loads none of the pull/push stack, no click
(builder/cli/quick.py) and none of the copy, commit and snapshot-worker code, and its
empty snapshot is made without the user namespace yet owned and moded exactly as a namespace
worker makes it (rootless: the namespace's root is the user's own uid)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.images import REPO

#: top-level packages `bale from scratch` must not import (tens of ms each: builder/lazyimport.py)
#: (and urllib.request / http.client: ADD from a URL loads them, builder/build/copier.py)
HEAVY_PACKAGES = ("requests", "urllib3", "charset_normalizer", "cryptography", "zstandard", "tqdm")
STDLIB_HEAVY = ("urllib.request", "http.client", "email.utils")
#: bale's pull/push stack: builder.scripted loads builder.image.pull at the first pull or push
PULL_STACK = ("builder.image.pull", "builder.image.imagecopy", "builder.image.transports",
              "builder.image.dockerdaemon", "builder.image.dockerarchive", "builder.image.layout",
              "builder.image.registry.client", "builder.image.registry.auth", "builder.image.registry.http",
              "builder.image.sign", "builder.image.cosignkey", "builder.image.reference")
#: the namespace helper and the isolations' code: loaded by a Runtime at their first use (and by a
#: probe), never for an empty snapshot (scripted._prepare_empty) once the host's probe is kept
SANDBOX = ("builder.sandbox.userns", "builder.sandbox.helper", "builder.sandbox.process", "builder.sandbox.idmap",
           "builder.sandbox.chroot", "builder.sandbox.ptrace", "builder.sandbox.landlock", "builder.sandbox.seccomp",
           "builder.sandbox.runtime", "builder.sandbox.binds")
#: click (builder/cli/quick.py answers `from scratch`), the copy, commit and namespace-worker code
#: (builder/scripted.py loads them at the first verb that needs them; an empty snapshot needs only
#: builder/workspace/prepare.py and the drivers), the options dataclasses, the standard library
#: modules only they use, and logging (builder/log.py: imported when a message is logged)
NOT_FOR_SCRATCH = ("click", "builder.cli.group", "builder.cli.commands.containers", "builder.options",
                   "builder.build.copier", "builder.workspace.snapshots", "builder.image.compress",
                   "builder.image.layerblob", "builder.sandbox.spec", "frontend.dockerignore", "snapshotter.apply",
                   "snapshotter.diff", "snapshotter.copytree", "tarfile", "subprocess", "datetime",
                   "concurrent.futures", "logging", "traceback", "builder.image.commit")


def _imported(args: list[str], env: dict[str, str]) -> set[str]:
    """The modules ``bale ARGS`` imports, read from -X importtime's report."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "builder.cli.main", *args],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO), **env))
    assert out.returncode == 0, out.stderr
    return {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}


def test_from_scratch_imports_no_pull_stack_and_no_sandbox(tmp_path: Path) -> None:
    run = tmp_path / "xdg"
    run.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(run)}  # the host's probe answer, kept by the first store's command
    first = _imported(["--root", str(tmp_path / "s1"), "from", "scratch"], env)
    mods = _imported(["--root", str(tmp_path / "s2"), "from", "scratch"], env)
    assert "builder.scripted" in mods and "builder.workspace.prepare" in mods  # the report is of the real command
    for got in (first, mods):
        heavy = sorted(m for m in got if m.split(".")[0] in HEAVY_PACKAGES or m in PULL_STACK or m in STDLIB_HEAVY)
        assert not heavy, heavy
    assert not sorted(set(NOT_FOR_SCRATCH) & mods), sorted(set(NOT_FOR_SCRATCH) & mods)  # the probe kept
    assert not sorted(set(SANDBOX) & mods), sorted(set(SANDBOX) & mods)


# Makes a scratch container through scripted.container_over with the namespace refused, then the
# same empty snapshot through the namespace (Runtime.call), and prints both trees: path -> owner,
# group, mode (and contents for files).
_SCRIPT = r"""
import json, os, sys
from builder import scripted
from builder.image.oci import ImageConfig
from builder.workspace import snapshots
from builder.workspace.workspace import Workspace

ws = Workspace(sys.argv[1], driver=sys.argv[2])
rt = ws.runtime()

def refused(*args, **kw):
    raise AssertionError("the user namespace was asked for")

rt.call, rt.userns = refused, refused
state = scripted.container_over(ws, rt, "scratch", None, ImageConfig(architecture="amd64", os="linux"), [], save=False)
del rt.call, rt.userns
rt.call(snapshots.prepare, str(rt.snapshots_root), rt.driver_name, "made-in-the-namespace", [])

def tree(key):
    top = snapshots._driver(str(rt.snapshots_root), rt.driver_name)._cdir(key)
    out = {}
    for dirpath, dirs, files in os.walk(top):
        for p in [dirpath] + [os.path.join(dirpath, f) for f in files]:
            st = os.lstat(p)
            body = open(p).read() if os.path.isfile(p) else None
            out[os.path.relpath(p, top)] = [st.st_uid, st.st_gid, oct(st.st_mode), body]
    return out

print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "isolation": rt.isolation,
                  "direct": tree(state.key), "namespace": tree("made-in-the-namespace")}))
"""


def _check(result: dict[str, object]) -> None:
    direct, ns = result["direct"], result["namespace"]
    assert isinstance(direct, dict) and isinstance(ns, dict)
    assert direct == ns and len(direct) > 1, (direct, ns)
    assert {(v[0], v[1]) for v in direct.values()} == {(result["uid"], result["gid"])}


@pytest.mark.parametrize("driver", ["overlay", "native"])
def test_scratch_snapshot_without_the_namespace_equals_the_namespace_one(tmp_path: Path, driver: str) -> None:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "store"), driver], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 0, out.stderr
    _check(json.loads(out.stdout))


@pytest.mark.rootless
@pytest.mark.parametrize("driver", ["overlay", "native"])
def test_scratch_snapshot_rootless_equals_the_namespace_one(unprivileged_user, user_tmp: Path, driver: str) -> None:
    u = unprivileged_user
    result = json.loads(u.run([u.python, "-c", _SCRIPT, str(user_tmp / "store"), driver]).stdout)
    assert result["isolation"] == "rootless"  # the namespace path really is the user namespace's
    _check(result)
