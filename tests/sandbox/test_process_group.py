"""A RUN cannot signal bale's process group (issue 9: "RUN never sees or signals bale's
processes"). ``kill -9 0`` signals the caller's process group; before the RUN got a session
of its own it reached across the pid namespace and killed bale and the shell (CI job) that
started it. The RUN is PID 1 of its pid namespace in rootless and oci isolation, so the
kernel ignores the signal there (as for any container's init under runc, BuildKit's
executor); in chroot isolation the RUN's own session dies and the build fails in one line.
Either way the caller, a shell in bale's process group, survives."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.fixtures.images import REPO

pytestmark = [pytest.mark.slow]


@pytest.mark.parametrize("isolation", ["rootless", "oci", "chroot"])
def test_run_cannot_kill_bales_process_group(store_with_busybox, tmp_path, isolation):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN kill -9 0; kill -9 -1; echo rc=$?\n")
    bale = [sys.executable, "-m", "builder.cli.main", "--root", str(store_with_busybox), "bud",
            "--isolation", isolation, "--layers=false", str(ctx)]
    script = 'cmd="$@"; "$@" > "$OUT" 2>&1; echo "caller survived, bale exit $?"'
    env = dict(os.environ, PYTHONPATH=str(REPO), OUT=str(tmp_path / "bale.log"))
    # setsid: the shell leads a process group of its own, which bale (its child) shares
    r = subprocess.run(["setsid", "--wait", "sh", "-c", script, "sh", *bale], capture_output=True, text=True,
                       env=env, timeout=300)
    log = (tmp_path / "bale.log").read_text()
    assert "caller survived" in r.stdout, (r.returncode, r.stdout, r.stderr, log)
    status = int(r.stdout.split("bale exit ")[1])
    if isolation == "chroot":
        assert status == 1 and log.strip().splitlines()[-1] == \
            "bale: Dockerfile:2: RUN: kill -9 0; kill -9 -1; echo rc=$?: killed by signal 9", log
    else:
        assert status == 0 and "COMMIT" in log, log
