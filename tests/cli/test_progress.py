"""Progress as users expect it (issue 11 item 10): bud prints the FROM step and the base
image's pull; tqdm bars on a terminal, plain lines without one and on a terminal that
reports zero columns (a pseudo-terminal nobody sized, as CI runners make), nothing with -q."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.fixtures.images import REPO, push_busybox


def _bale_on_pty(args: list[str], rows: int, cols: int, env: dict[str, str], cwd: Path) -> str:
    """bale with stderr on a new pseudo-terminal of ``rows`` x ``cols``; returns what it wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    full = dict(os.environ, PYTHONPATH=str(REPO), **env)
    full.pop("COLUMNS", None)
    full.pop("LINES", None)
    proc = subprocess.Popen([sys.executable, "-m", "builder.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL, env=full, cwd=cwd)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(300)
    os.close(master)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_bud_shows_from_and_pull_progress(registry, busybox_layout, tmp_path):
    ref = push_busybox(registry, busybox_layout, "bale/progress-base")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN true\n")
    env = dict(registry.env)

    def bud(root: str, rows: int, cols: int, *extra: str) -> str:
        return _bale_on_pty(["--root", str(tmp_path / root), "bud", "--tls-verify=false", *extra, str(ctx)],
                            rows, cols, env, tmp_path)

    zero = bud("s0", 0, 0)
    lines = zero.replace("\r\n", "\n").split("\n")
    assert f"Pulling {ref}" in zero and "Copying blob" in zero  # plain lines, as in CI
    assert "\r" not in zero.replace("\r\n", "\n")  # no bar redrawn in place
    assert "" not in [l for l in lines[:-1]]  # and no blank lines (tqdm on zero columns prints those)
    assert "STEP 1/2: FROM " + ref in zero
    sized = bud("s1", 24, 100)
    assert "blob" in sized and "\r" in sized.replace("\r\n", "\n")  # tqdm bars on a sized terminal
    assert "STEP 1/2: FROM " + ref in sized
    quiet = bud("s2", 24, 100, "-q")
    assert quiet == ""
