#!/usr/bin/env python3
"""Layer commit throughput (issue 10): bale's diff -> tar -> compress -> hash -> store path on
one directory, next to `tar -cf - DIR | zstd -T0 -3` on the same data. Not part of the test
suite; timing goals live in the README's "Speed" section, never in tests.

    python3 ci/commitbench.py [--scale 0.27] [--work /var/tmp] [--runs 3] [--profile]
                              [--compression zstd,gzip] [--dir EXISTING_DIR]

The directory (made by ci/bench.py's generator unless --dir is given) is taken as an
overlay upper with no layer under it, so the diff is every entry in it. The commit runs
as a build runs it: the tar is written by a forked child (the namespace helper's place)
into a pipe, and this process compresses, hashes and stores it (builder.scripted's
commit_layer sink). Rows: wall seconds (median), MB/s of the directory's file bytes, CPU
seconds of both processes, the peak RSS of this process (MB). ``--profile`` prints
cProfile's top entries of each side (the child's and the sink's) once.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from builder.image.store import Store  # noqa: E402
from builder.workspace.runtime import enlarge_pipe  # noqa: E402
from snapshotter.api import get_driver  # noqa: E402


def tree_bytes(path: Path) -> tuple[int, int]:
    """(file bytes, entries) under ``path``."""
    size = count = 0
    for d, dirs, files in os.walk(path):
        count += len(dirs) + len(files)
        size += sum(os.lstat(os.path.join(d, f)).st_size for f in files)
    return size, count


def cpu_now() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its waited children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime


def reference(data: Path) -> float:
    """Wall seconds of `tar -cf - | zstd -T0 -3 > /dev/null` over ``data``."""
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", f"tar -cf - -C {data} . | zstd -q -T0 -3 > /dev/null"], check=True)
    return time.perf_counter() - t0


def _child(snaproot: Path, key: str, w: int, profile: str | None) -> None:
    """The producer: the driver's diff into the pipe (what snapshots.diff_to_fd does)."""
    from builder.workspace import snapshots

    def go() -> None:
        snapshots.diff_to_fd(w, str(snaproot), "overlay", key, [], None)

    if profile:
        cProfile.runctx("go()", globals(), {"go": go}, profile)
    else:
        go()


def commit_once(snaproot: Path, key: str, store: Store, compression: str,
                profile: str | None = None) -> tuple[float, float, float, str]:
    """One commit: (wall seconds, CPU seconds of the sink and of the producer, layer digest)."""
    from builder.image.layerblob import store_layer
    r, w = os.pipe()
    enlarge_pipe(w)
    c0, t0 = cpu_now(), time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            _child(snaproot, key, w, profile + ".child" if profile else None)
        except BaseException:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    def sink(fh: Any) -> Any:
        return store_layer(fh, store, compression, None)
    with os.fdopen(r, "rb", buffering=1 << 20) as fh:
        if profile:
            prof = cProfile.Profile()
            got = prof.runcall(sink, fh)
            prof.dump_stats(profile + ".sink")
        else:
            got = sink(fh)
    _, status = os.waitpid(pid, 0)
    if status:
        raise SystemExit("commitbench: the producer failed")
    wall, c1 = time.perf_counter() - t0, cpu_now()
    digests, desc = got
    return wall, c1[0] - c0[0], c1[1] - c0[1], desc.digest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=0.27, help="ci/bench.py's context size factor (0.27: ~300 MB)")
    ap.add_argument("--work", default="/var/tmp")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--compression", default="zstd,gzip")
    ap.add_argument("--dir", default=None, help="commit this directory (hard-linked) instead of generating one")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bale-commitbench-", dir=args.work))
    try:
        snaproot = work / "snap"
        key = "bench"
        cdir = snaproot / "overlay" / "containers" / key
        cdir.mkdir(parents=True)
        (cdir / "layers.json").write_text("[]")
        if args.dir:
            data = cdir / "upper"  # hard links to the files (nothing is copied)
            subprocess.run(["cp", "-al", str(Path(args.dir).resolve()), str(data)], check=True)
        else:
            sys.path.insert(0, str(REPO / "ci"))
            import bench
            data = cdir / "upper"
            bench.make_copy_context(data, args.scale, random.Random(10))
        size, entries = tree_bytes(data)
        get_driver("overlay", snaproot)  # the layout exists
        print(f"commitbench: {size / 1e6:.0f} MB in {entries} entries, {os.cpu_count()} cores, "
              f"load {os.getloadavg()[0]:.1f}")
        refs = [reference(data) for _ in range(args.runs)]
        ref = statistics.median(refs)
        print(f"| what | s | MB/s | CPU s (sink + tar producer) | vs tar\\|zstd -T0 -3 |\n|---|---:|---:|---:|---:|")
        print(f"| tar -cf - \\| zstd -T0 -3 | {ref:.2f} | {size / ref / 1e6:.0f} | - | 1.00 |")
        store = Store(work / "store")
        for comp in args.compression.split(","):
            walls, cpus, producer, digests = [], [], [], set()
            for _ in range(args.runs):
                wall, cpu, child, digest = commit_once(snaproot, key, store, comp)
                walls.append(wall)
                cpus.append(cpu)
                producer.append(child)
                digests.add(digest)
                os.unlink(store.blob_path(digest))
            if len(digests) != 1:
                raise SystemExit(f"commitbench: {comp} layers differ between runs: {digests}")
            wall = statistics.median(walls)
            print(f"| bale commit, {comp} | {wall:.2f} | {size / wall / 1e6:.0f} | {statistics.median(cpus):.2f} "
                  f"+ {statistics.median(producer):.2f} | {ref / wall:.2f} |")
        print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        if args.profile:
            for comp in args.compression.split(","):
                prefix = str(work / f"prof-{comp}")
                commit_once(snaproot, key, store, comp, prefix)
                for side in ("child", "sink"):
                    out = io.StringIO()
                    pstats.Stats(f"{prefix}.{side}", stream=out).sort_stats("tottime").print_stats(14)
                    print(f"--- {comp}, {side} ---\n" + out.getvalue().split("\n\n", 1)[-1].strip())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
