#!/usr/bin/env python3
"""Start-up of bale (issue 10): `bale --version`, `bale from scratch` in a new store and in a
used one, for one or more source trees, runs alternating between the trees. Not part of the
test suite; the README's start-up paragraph gives the latest numbers.

    python3 ci/startbench.py [--runs 20] [--rounds 2] [--python PY] TREE [TREE...]

Run it as the user to measure (an unprivileged user with a subordinate id range for the
rootless path: e.g. ``runuser -u baletest -- env -i PATH=/usr/bin:/bin HOME=/tmp python3
ci/startbench.py /tmp/old /tmp/new``, each tree made by ``git archive`` and compiled with
``python3 -m compileall``, as an installed bale is). Per row: the median and minimum of the
wall time (time.perf_counter around each run) and of the CPU time (user + system of the
waited-for processes, from getrusage(RUSAGE_CHILDREN): bale waits for its namespace helper at
exit, and the helper for its workers, so theirs is in it).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _run(python: str, tree: str, args: list[str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one `bale ARGS` from ``tree``; exits on a failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([python, "-m", "builder.cli.main", *args], env=dict(os.environ, PYTHONPATH=tree),
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"{tree}: bale {' '.join(args)}: {r.stderr.strip()}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--python", default=sys.executable)
    opts = ap.parse_args()
    base = tempfile.mkdtemp(prefix="bale-startbench-")
    try:
        for rnd in range(opts.rounds):
            for n, tree in enumerate(opts.trees):
                print(f"== {tree} (round {rnd + 1})")
                store = f"{base}/{n}-{rnd}"
                rows: list[tuple[str, list[str]]] = [
                    ("--version", ["--version"]),
                    ("from scratch, new store", ["--root", f"{store}-new{{}}", "from", "scratch"]),
                    ("from scratch, used store", ["--root", f"{store}-used", "from", "scratch"])]
                for name, argv in rows:
                    _run(opts.python, tree, [a.format("w") for a in argv])  # warm caches (and the used store)
                    got = [_run(opts.python, tree, [a.format(i) for a in argv]) for i in range(opts.runs)]
                    wall = [g[0] * 1000 for g in got]
                    cpu = [g[1] * 1000 for g in got]
                    print(f"  {name:25s} wall median {statistics.median(wall):7.1f} ms (min {min(wall):6.1f})"
                          f"   cpu median {statistics.median(cpu):6.1f} ms (min {min(cpu):6.1f})")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
