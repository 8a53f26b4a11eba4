#!/usr/bin/env python3
"""Speed goals, measured: bale against buildah (when installed) on the same
Dockerfiles and base image, plus layer compression throughput.

    python3 ci/bench.py [--runs N]

Goals (checked here, never in the test suite): a RUN step costs < 100 ms of
overhead, a cached rebuild < 1 s, and bale is not slower than buildah on any
case. Prints a table; exits 1 if a goal is missed.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "hello": None,  # examples/hello
    "ten-runs": "FROM busybox\n" + "".join(f"RUN echo {i} > /f{i}\n" for i in range(10)),
    "big-copy": "FROM busybox\nCOPY data /data\nRUN du -s /data > /size\n",
}


def timed(argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, env=env, cwd=cwd)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}...: {r.stderr.decode()[-500:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bale-bench-"))
    bale = [sys.executable, "-m", "builder.cli.main", "--root", str(work / "bale")]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, str(REPO / "examples" / "make-busybox-image.py"), str(work / "busybox")],
                   check=True)
    iid = subprocess.run(bale + ["pull", "-q", f"oci:{work}/busybox:latest"], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    subprocess.run(bale + ["tag", iid, "busybox"], env=env, check=True)
    buildah = shutil.which("buildah")
    bh = [buildah, "--root", str(work / "buildah"), "--runroot", str(work / "buildah-run"),
          "--storage-driver", "vfs"] if buildah else None
    if bh:
        subprocess.run(bh + ["pull", "-q", f"oci:{work}/busybox:latest"], check=True, capture_output=True)
        subprocess.run(bh + ["tag", iid, "busybox"], check=True, capture_output=True)
    contexts = {}
    for name, text in CASES.items():
        ctx = REPO / "examples" / "hello" if text is None else work / f"ctx-{name}"
        if text is not None:
            ctx.mkdir()
            (ctx / "Dockerfile").write_text(text)
            if name == "big-copy":
                (ctx / "data").mkdir()
                for i in range(200):
                    (ctx / "data" / f"f{i}").write_bytes(os.urandom(256 * 1024))
        contexts[name] = ctx
    rows = []
    failed = False
    for name, ctx in contexts.items():
        t_bale = [timed(bale + ["bud", "-q", "-t", f"b-{name}", str(ctx)], env) for _ in range(args.runs)]
        t_cached = timed(bale + ["bud", "-q", "--layers", "-t", f"c-{name}", str(ctx)], env)
        t_cached = min(t_cached, timed(bale + ["bud", "-q", "--layers", "-t", f"c-{name}", str(ctx)], env))
        t_bh = [timed(bh + ["bud", "-q", "--isolation", "chroot", "-t", f"b-{name}", str(ctx)])
                for _ in range(args.runs)] if bh else []
        rows.append((name, statistics.median(t_bale), t_cached, statistics.median(t_bh) if t_bh else None))
        if t_cached > 1.0 or (t_bh and statistics.median(t_bale) > statistics.median(t_bh)):
            failed = True
    runs = CASES["ten-runs"].count("RUN")
    per_run = rows[1][1] / runs  # whole build time over its RUN count: an upper bound
    print(f"{'case':<12} {'bale s':>8} {'cached s':>9} {'buildah s':>10}")
    for name, b, c, h in rows:
        print(f"{name:<12} {b:8.2f} {c:9.2f} {h if h is not None else float('nan'):10.2f}")
    print(f"per-RUN upper bound: {per_run * 1000:.0f} ms")
    failed |= per_run > 0.1
    data = os.urandom(16 << 20) + bytes(48 << 20)
    from builder.image.compress import compress_layer
    for kind in ("gzip", "zstd"):
        t0 = time.perf_counter()
        compress_layer(io.BytesIO(data), io.BytesIO(), kind)
        dt = time.perf_counter() - t0
        print(f"{kind} layer compression: {len(data) / dt / 1e6:.0f} MB/s")
    if not bh:
        print("buildah not installed: no comparison")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
