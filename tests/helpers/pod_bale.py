"""bale run as the unprivileged test user under a pod's seccomp restrictions, made on this host with
tests/sandbox/seccomp_wrap.py (installed before bale starts, as a pod's runtime does)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fixtures.users import REPO

WRAP = REPO / "tests" / "sandbox" / "seccomp_wrap.py"


def bale_in_pod(mode: str, u: Any, store: Path, *args: str, epoch: str,
                timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``bale --root store ARGS`` as the user ``u`` (runuser, a clean environment: ``u.env()`` and
    SOURCE_DATE_EPOCH ``epoch``) under seccomp_wrap.py's ``mode`` ("restricted",
    "restricted-no-landlock", "no-sethostname"), from /tmp; stdout and stderr captured as text."""
    cmd = u.bale_argv(*args, root=store, env={"SOURCE_DATE_EPOCH": epoch})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(WRAP), mode, *cmd], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd="/tmp")
