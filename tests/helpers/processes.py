"""Waiting for and signalling the processes a test starts in the background."""
from __future__ import annotations

import os
import subprocess
import time


def running(pattern: str) -> bool:
    """Whether a process whose command line matches ``pattern`` runs (pgrep -f)."""
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def wait_started(proc: subprocess.Popen, pattern: str, what: str, timeout: float = 30) -> None:
    """Wait (up to ``timeout`` seconds) until a process matching ``pattern`` runs while ``proc``
    does; else kill ``proc`` and raise AssertionError "WHAT never started: (its output)"."""
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if running(pattern):
            return
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{what} never started: {proc.communicate()}")


def signal_children(proc: subprocess.Popen, sig: int) -> None:
    """``sig`` to the children of ``proc`` only (bale under runuser: this test's bale, not other
    tests' bale processes of the same user, nor its own children)."""
    for pid in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split():
        os.kill(int(pid), sig)
