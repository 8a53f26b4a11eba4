"""The Python API (`import bale`): the example script runs rootless end to end,
the import is lazy, and what the CLI used to pass through the environment
(--runtime) travels as a Workspace field."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.images import REPO, run_bale

HEAVY = ("requests", "zstandard", "cryptography", "tqdm", "dockerfile_parse", "click")


@pytest.mark.slow
@pytest.mark.rootless
def test_example_script_runs_rootless(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    work = user_tmp / "api"
    r = u.run([u.python, str(REPO / "examples" / "api-build.py"), str(work)], timeout=600)
    lines = r.stdout.splitlines()
    assert [l.split()[0] for l in lines] == ["pulled", "committed", "built", "pushed", "exported", "errors"], r.stdout
    assert "ContainerError: container no-such-container" in lines[-1]
    with tarfile.open(work / "rootfs.tar") as t:  # an independent read of what the script checked itself
        m = t.getmember("app/message.txt")
        assert (m.uid, m.gid) == (1234, 4321)
        assert t.extractfile(m).read() == b"hello from bale\nbuilt\n"
    assert (work / "out" / "index.json").exists()


def test_import_bale_is_lazy_and_exports_the_operations():
    code = ("import sys, bale; heavy = [m for m in sys.modules if m.split('.')[0] in %r]; "
            "assert not heavy, heavy; "
            "names = ['build', 'pull', 'push', 'from_image', 'run', 'copy', 'config', 'commit', 'remove', "
            "'Workspace', 'BuildOptions', 'FromOptions', 'RunOptions', 'CopyOptions', 'ConfigOptions', "
            "'CommitOptions', 'PullOptions', 'PushOptions', 'BaleError']; "
            "assert all(getattr(bale, n).__doc__ for n in names); print(bale.__version__)" % (HEAVY,))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr


def test_options_are_frozen_and_workspace_validates():
    import dataclasses

    import bale
    with pytest.raises(dataclasses.FrozenInstanceError):
        bale.RunOptions().network = "none"  # type: ignore[misc]
    with pytest.raises(bale.UsageError):
        bale.Workspace("/nonexistent", isolation="vm")
    assert bale.Workspace("/x", driver="vfs").driver == "native"


def test_library_reads_no_runtime_from_the_environment():
    for path in (REPO / "builder").rglob("*.py"):
        if "cli" in path.relative_to(REPO / "builder").parts:
            continue
        assert "BALE_RUNTIME" not in path.read_text(), path


def test_runtime_flag_reaches_the_oci_runtime(bale, store_with_busybox):
    root = store_with_busybox
    name = run_bale(["from", "--isolation", "oci", "busybox"], root=root).stdout.strip()
    r = run_bale(["run", "--isolation", "oci", "--runtime", "/nonexistent/crun", name, "true"], root=root,
                 check=False)
    assert r.returncode == 1 and r.stderr.strip() == "bale: --runtime /nonexistent/crun: not found or not executable"
    r = run_bale(["run", "--isolation", "oci", name, "true"], root=root, check=False,
                 env={"BALE_RUNTIME": "/nonexistent/runc"})  # the flag's environment default, read by the CLI
    assert "--runtime /nonexistent/runc" in r.stderr
