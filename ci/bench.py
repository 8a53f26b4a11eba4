#!/usr/bin/env python3
"""Throughput of bale, measured against rootless buildah and plain tools on workloads
this script generates itself (issue 10). Not part of the test suite; timing goals
live in the README's "Speed" section, never in tests.

    (. ci/lib.sh && apt_install "${BENCH_PKGS[@]}")
    sudo python3 ci/bench.py [--scale 1.0] [--runs 3] [--only copy,multistage,layers,push]
                             [--no-buildah] [--work DIR] [--keep]

Workloads (sizes times --scale; 1.0 is the full size):
  copy        `COPY . /data/` of a ~1 GB context: 5 x 100 MiB random, 3 x 100 MiB text,
              34k small files, and a .dockerignore dropping logs/ and *.tmp (which hold
              more files); the layer committed with gzip and with zstd
  multistage  a Debian-like base (10k files), a builder stage making a 20k-file venv,
              `COPY --from=builder /opt/venv /opt/venv`; then one venv file changed and rebuilt
              with --layers; then a file the builder copies after the venv changed (the final
              stage's COPY --from should hit the cache)
  layers      41 steps (FROM + 20 RUN + 20 COPY), cold, then a cached rebuild (--layers)
  push        push of the copy workload's image to a local docker-registry on 127.0.0.1
              (Debian's binary, as tests/fixtures/registry.py starts it; a new one for
              every push, so nothing is mounted from another repository) and pull into a
              new store, zstd and gzip. bale's layers are compressed when committed and a
              pull only stores blobs (they are unpacked at first use); buildah compresses
              when pushing and unpacks when pulling: the rows time each tool's own verb
For reference the same context goes through `tar -cf - | cat`, `tar | zstd -T0 -3`
and `cp -a`. Builds run as the unprivileged user `baletest` (tests/fixtures/users.py
makes it, with a subordinate id range): bale from this checkout, buildah (when
installed) with overlay storage, `--isolation chroot --network host` (PLATFORM.md:
rootless buildah's slirp4netns and crun fail here). Runs alternate between the
tools; the table gives medians, the bale/buildah ratio, MB/s of the context where it
applies, the CPU seconds (user + system) and the peak RSS of the process tree (both
from getrusage of the waited children; CPU seconds are the steadier number on a busy
machine).
Everything runs with warm page caches (nothing drops them): read the numbers as
CPU-bound throughput, and as noisy on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
USER = "baletest"


@dataclass
class Sample:
    seconds: float
    peak_mb: float
    cpu: float = 0.0  # user + system seconds of the whole process tree


@dataclass
class Row:
    name: str
    bytes: int = 0  # data moved, for MB/s (0: no rate)
    bale: list[Sample] = field(default_factory=list)
    buildah: list[Sample] = field(default_factory=list)


def run(argv: list[str], *, check: bool = True) -> Sample:
    """Run to completion (output captured); the wall seconds."""
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True)
    if check and p.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[-8:])}: exit {p.returncode}\n"
                         f"{p.stderr.decode(errors='replace')[-1500:]}")
    return Sample(time.perf_counter() - t0, 0.0)


def run_measured(argv: list[str]) -> Sample:
    """As run(), with ru_maxrss taken from a small wrapper that waits for the command itself."""
    wrapper = [sys.executable, "-c",
               "import os,resource,subprocess,sys,time\n"
               "t=time.perf_counter();r=subprocess.run(sys.argv[1:]);d=time.perf_counter()-t\n"
               "u=resource.getrusage(resource.RUSAGE_CHILDREN)\n"
               "sys.stderr.write('\\nBENCH %f %d %f\\n'%(d,u.ru_maxrss,u.ru_utime+u.ru_stime))\n"
               "sys.exit(r.returncode)", *argv]
    p = subprocess.run(wrapper, capture_output=True)
    tail = p.stderr.decode(errors="replace").rstrip().rsplit("\n", 1)
    if p.returncode != 0 or not tail[-1].startswith("BENCH "):
        raise SystemExit(f"bench: {' '.join(argv[-10:])}: exit {p.returncode}\n{p.stderr.decode(errors='replace')[-2000:]}")
    _, secs, kb, cpu = tail[-1].split()
    return Sample(float(secs), int(kb) / 1024, float(cpu))


class Tools:
    """The two builders, run as the unprivileged user in a work directory it owns."""

    def __init__(self, work: Path, buildah: bool) -> None:
        sys.path.insert(0, str(REPO))
        from tests.fixtures.users import _ensure_user, _venv_python, make_traversable
        pw = _ensure_user(USER, True)
        make_traversable(REPO)
        self.uid, self.gid, self.home = pw.pw_uid, pw.pw_gid, pw.pw_dir
        self.python = _venv_python() or sys.executable
        self.work = work
        run_dir = Path(f"/tmp/bale-run-{self.uid}")
        run_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(run_dir, self.uid, self.gid)
        self.env = {"HOME": self.home, "USER": USER, "LOGNAME": USER, "LANG": "C.UTF-8",
                    "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONPATH": str(REPO),
                    "XDG_RUNTIME_DIR": str(run_dir), "TMPDIR": str(work / "tmp")}
        self.buildah = shutil.which("buildah") if buildah else None

    def as_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in self.env.items()], *argv]

    def bale(self, root: str, *args: str) -> list[str]:
        return self.as_user([self.python, "-m", "builder.cli.main", "--root", str(self.work / root), *args])

    def bh(self, root: str, *args: str) -> list[str]:
        assert self.buildah
        return self.as_user([self.buildah, "--root", str(self.work / root), "--runroot", str(self.work / (root + "-run")),
                             "--storage-driver", "overlay", *args])

    def chown_tree(self, path: Path) -> None:
        for dirpath, dirs, files in os.walk(path):
            os.lchown(dirpath, self.uid, self.gid)
            for n in files + dirs:
                os.lchown(os.path.join(dirpath, n), self.uid, self.gid)


# --- workload generators ------------------------------------------------------------------
_WORDS: list[bytes] = []


def _text_pool(rng: random.Random, size: int = 4 * MiB) -> bytes:
    if not _WORDS:
        letters = b"etaoinshrdlucmfwypvbgkjqxz"
        _WORDS.extend(bytes(rng.choices(letters, k=rng.randint(2, 11))) for _ in range(8000))
    out, n = [], 0
    while n < size:
        line = b" ".join(rng.choices(_WORDS, k=rng.randint(4, 16))) + b"\n"
        out.append(line)
        n += len(line)
    return b"".join(out)[:size]


def _write_text(path: Path, size: int, pool: bytes, rng: random.Random) -> None:
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            k = min(left, MiB)
            off = rng.randrange(0, len(pool) - k + 1)
            fh.write(pool[off:off + k])
            left -= k


def make_copy_context(ctx: Path, scale: float, rng: random.Random) -> int:
    """The 1 GB context; returns the bytes COPY takes from it (what .dockerignore keeps)."""
    pool = _text_pool(rng)
    (ctx / "big").mkdir(parents=True)
    kept = 0
    for i in range(5):
        with open(ctx / "big" / f"random{i}.bin", "wb") as fh:
            for _ in range(max(1, int(100 * scale))):
                fh.write(os.urandom(MiB))
        kept += max(1, int(100 * scale)) * MiB
    for i in range(3):
        n = max(1, int(100 * scale)) * MiB
        _write_text(ctx / "big" / f"text{i}.txt", n, pool, rng)
        kept += n
    sizes = (200, 1000, 4000, 8000, 20000)
    for i in range(max(10, int(34000 * scale))):
        d = ctx / "src" / f"pkg{i // 500:03d}" / f"mod{i // 50 % 10}"
        if i % 50 == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = rng.choice(sizes)
        off = rng.randrange(0, len(pool) - size)
        (d / f"file{i}.py").write_bytes(pool[off:off + size])
        kept += size
        if i % 97 == 0:
            (d / f"scratch{i}.tmp").write_bytes(pool[:4096])  # dropped by .dockerignore
    (ctx / "logs").mkdir()
    for i in range(max(2, int(300 * scale))):
        (ctx / "logs" / f"build{i}.log").write_bytes(pool[:64 * 1024])  # dropped by .dockerignore
    (ctx / ".dockerignore").write_text("logs\n**/*.tmp\n")
    (ctx / "Dockerfile").write_text("FROM localhost/bench-base\nCOPY . /data/\n")
    kept += len("FROM localhost/bench-base\nCOPY . /data/\n") + len("logs\n**/*.tmp\n")
    return kept


def make_tree(root: Path, files: int, rng: random.Random, pool: bytes, top: str) -> None:
    """A package-manager-like tree: many small files in many directories, some symlinks."""
    for i in range(files):
        d = root / top / f"pkg{i // 200:03d}" / f"sub{i // 20 % 10}"
        if i % 20 == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = rng.choice((60, 300, 1200, 3000, 9000))
        off = rng.randrange(0, len(pool) - size)
        (d / f"f{i}.py").write_bytes(pool[off:off + size])
        if i % 50 == 1:
            os.symlink(f"f{i}.py", d / f"link{i}")


def make_multistage(base_ctx: Path, ctx: Path, scale: float, rng: random.Random) -> None:
    pool = _text_pool(rng, MiB)
    make_tree(base_ctx, max(10, int(10000 * scale)), rng, pool, "usr/share/lib")
    (base_ctx / "Dockerfile").write_text("FROM localhost/bench-base\nCOPY usr /usr\n")
    make_tree(ctx, max(10, int(20000 * scale)), rng, pool, "venv")
    (ctx / "other.txt").write_text("other\n")
    (ctx / "Dockerfile").write_text(
        "FROM localhost/bench-deb AS builder\nCOPY venv /opt/venv\nRUN echo built > /opt/venv/BUILT\n"
        "COPY other.txt /other.txt\n"
        "FROM localhost/bench-deb\nCOPY --from=builder /opt/venv /opt/venv\n")


def make_layers(ctx: Path) -> None:
    ctx.mkdir(parents=True)
    lines = ["FROM localhost/bench-base"]
    for i in range(20):
        (ctx / f"f{i}").write_text(f"file {i}\n" * 100)
        lines += [f"RUN echo {i} > /r{i}", f"COPY f{i} /c/f{i}"]
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")


def tree_bytes(path: Path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs)


# --- measurements ---------------------------------------------------------------------------
def references(ctx: Path, work: Path, runs: int) -> list[tuple[str, float]]:
    size = tree_bytes(ctx)
    out = []
    cmds = {"tar -cf - | cat": f"tar -cf - -C {ctx} . | cat > /dev/null",
            "tar | zstd -T0 -3": f"tar -cf - -C {ctx} . | zstd -q -T0 -3 > /dev/null",
            "cp -a": f"cp -a {ctx} {work}/cp-dest && sync -f {work}/cp-dest"}
    for name, cmd in cmds.items():
        times = []
        for _ in range(runs):
            shutil.rmtree(work / "cp-dest", ignore_errors=True)
            times.append(run(["sh", "-c", cmd]).seconds)
        shutil.rmtree(work / "cp-dest", ignore_errors=True)
        out.append((name, size / statistics.median(times) / 1e6))
    return out


def median(xs: list[Sample]) -> float | None:
    return statistics.median(s.seconds for s in xs) if xs else None


def cpu(xs: list[Sample]) -> float | None:
    return statistics.median(s.cpu for s in xs) if xs else None


def peak(xs: list[Sample]) -> float | None:
    return max(s.peak_mb for s in xs) if xs else None


def print_table(rows: list[Row], refs: list[tuple[str, float]], args: argparse.Namespace) -> str:
    def f(x: float | None, fmt: str) -> str:
        return format(x, fmt) if x is not None else "-"
    lines = [f"bench: scale {args.scale}, {args.runs} runs each, medians; {os.cpu_count()} cores; "
             f"load average at the end {os.getloadavg()[0]:.1f}",
             "",
             "| workload | bale s | buildah s | bale/buildah | bale MB/s | buildah MB/s | bale CPU s | buildah CPU s "
             "| bale peak MB | buildah peak MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b, h = median(r.bale), median(r.buildah)
        ratio = b / h if b and h else None
        lines.append(f"| {r.name} | {f(b, '.2f')} | {f(h, '.2f')} | {f(ratio, '.2f')} | "
                     f"{f(r.bytes / b / 1e6 if b and r.bytes else None, '.0f')} | "
                     f"{f(r.bytes / h / 1e6 if h and r.bytes else None, '.0f')} | "
                     f"{f(cpu(r.bale), '.1f')} | {f(cpu(r.buildah), '.1f')} | "
                     f"{f(peak(r.bale), '.0f')} | {f(peak(r.buildah), '.0f')} |")
    if refs:
        lines += ["", "| same context through | MB/s |", "|---|---:|"]
        lines += ["| `" + n.replace("|", "\\|") + f"` | {v:.0f} |" for n, v in refs]
    text = "\n".join(lines)
    print(text)
    return text


def start_registry(work: Path, label: str) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's docker-registry on 127.0.0.1 (plain http), storing under work/registry-LABEL."""
    sys.path.insert(0, str(REPO))
    from tests.fixtures.registry import free_port
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not os.path.exists(binary):
        raise SystemExit("bench: docker-registry is not installed (apt-get install docker-registry)")
    host = f"127.0.0.1:{free_port()}"
    cfg = {"version": 0.1, "log": {"level": "error"}, "http": {"addr": host, "secret": "bench"},
           "storage": {"filesystem": {"rootdirectory": str(work / f"registry-{label}")}}}
    (work / "registry.yml").write_text(json.dumps(cfg))
    proc = subprocess.Popen([binary, "serve", str(work / "registry.yml")], stdout=subprocess.DEVNULL,
                            stderr=open(work / "registry.log", "wb"))  # noqa: SIM115
    import urllib.error
    import urllib.request
    for _ in range(400):
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=2)  # noqa: S310
            return proc, host
        except urllib.error.HTTPError:
            return proc, host
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit("bench: docker-registry did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="workload size factor (1.0: the full 1 GB context)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="copy,multistage,layers,push")
    ap.add_argument("--no-buildah", action="store_true")
    ap.add_argument("--work", default="/var/tmp", help="where the work directory is made (a disk, not tmpfs)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (it makes the unprivileged user baletest and runs the builds as it)")
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="bale-bench-", dir=args.work))
    os.chmod(work, 0o755)
    t = Tools(work, not args.no_buildah)
    (work / "tmp").mkdir()
    rng = random.Random(10)
    subprocess.run([t.python, "-m", "compileall", "-q", str(REPO / "builder"), str(REPO / "snapshotter"),
                    str(REPO / "frontend")], check=True, capture_output=True)  # as an installed package is
    print(f"bench: generating workloads in {work} (scale {args.scale})", file=sys.stderr)
    subprocess.run([sys.executable, str(REPO / "examples" / "make-busybox-image.py"), str(work / "busybox")],
                   check=True, capture_output=True)
    kept = make_copy_context(work / "ctx-copy", args.scale, rng) if only & {"copy", "push"} else 0
    if "multistage" in only:
        make_multistage(work / "ctx-deb", work / "ctx-multi", args.scale, rng)
    if "layers" in only:
        make_layers(work / "ctx-layers")
    t.chown_tree(work)
    rows: list[Row] = []
    refs: list[tuple[str, float]] = []
    bale, bh = t.bale, t.bh
    tools = [("bale", bale)] + ([("buildah", bh)] if t.buildah else [])

    def setup_store(name: str, tool: str) -> None:
        """A new store holding the bases (and the Debian-like one when needed)."""
        lay = f"oci:{work}/busybox:latest"
        if tool == "bale":
            iid = subprocess.run(bale(name, "pull", "-q", lay), capture_output=True, text=True,
                                 check=True).stdout.strip()
            run(bale(name, "tag", iid, "localhost/bench-base"))
        else:
            iid = subprocess.run(bh(name, "pull", "-q", lay), capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1]
            run(bh(name, "tag", iid, "localhost/bench-base"))

    def build(tool: str, store: str, ctx: Path, tag: str, *extra: str) -> Sample:
        if tool == "bale":
            return run_measured(bale(store, "bud", "-q", *extra, "-t", tag, str(ctx)))
        return run_measured(bh(store, "bud", "-q", "--isolation", "chroot", "--network", "host",
                               *extra, "-t", tag, str(ctx)))

    def wipe(tool: str, store: str, tag: str) -> None:
        if tool == "bale":
            run(bale(store, "rmi", tag), check=False)
            run(bale(store, "prune"), check=False)
        else:
            run(bh(store, "rmi", "-f", tag), check=False)

    for name, _ in tools:
        setup_store(f"{name}-store", name)

    if "copy" in only:
        for label, extra in (("COPY 1 GB context, gzip layer", ("--compression", "gzip")),
                             ("COPY 1 GB context, zstd layer", ("--compression", "zstd"))):
            row = Row(label.replace("1 GB", f"{kept / 1e9:.2g} GB"), kept)
            for _ in range(args.runs):
                for name, _f in tools:
                    if name == "buildah" and "zstd" in label:
                        continue  # buildah keeps layers uncompressed until a push: one row is enough
                    s = build(name, f"{name}-store", work / "ctx-copy", "big", *extra[:2 if name == "bale" else 0])
                    getattr(row, name).append(s)
                    wipe(name, f"{name}-store", "big")
            rows.append(row)
        refs = references(work / "ctx-copy", work, args.runs)

    if "multistage" in only:
        cold, rebuild = Row("multi-stage, 20k-file COPY --from, cold"), Row("same, one file changed, --layers")
        for name, _f in tools:
            build(name, f"{name}-store", work / "ctx-deb", "localhost/bench-deb")
        for i in range(args.runs):
            for name, _f in tools:
                getattr(cold, name).append(build(name, f"{name}-store", work / "ctx-multi", "multi"))
                wipe(name, f"{name}-store", "multi")
        for name, _f in tools:
            build(name, f"{name}-store", work / "ctx-multi", "multi", "--layers")  # prime the cache
        for i in range(args.runs):
            for name, _f in tools:
                target = work / "ctx-multi" / "venv" / "pkg000" / "sub0" / "f0.py"
                target.write_text(f"changed {name} {i}\n")
                os.lchown(target, t.uid, t.gid)
                getattr(rebuild, name).append(build(name, f"{name}-store", work / "ctx-multi", "multi", "--layers"))
        # issue 7: a file the builder stage copies after the venv changes; the venv the final stage
        # copies is identical, so its COPY --from is a cache hit (keyed on the copied subtree)
        unrelated = Row("same, unrelated builder file changed, --layers")
        venv_file = work / "ctx-multi" / "venv" / "pkg000" / "sub0" / "f0.py"
        venv_file.write_text("settled\n")  # the same venv for every tool from here on
        os.lchown(venv_file, t.uid, t.gid)
        for name, _f in tools:
            build(name, f"{name}-store", work / "ctx-multi", "multi", "--layers")  # prime with it
        for i in range(args.runs):
            for name, _f in tools:
                target = work / "ctx-multi" / "other.txt"
                target.write_text(f"other {name} {i}\n")
                os.lchown(target, t.uid, t.gid)
                getattr(unrelated, name).append(build(name, f"{name}-store", work / "ctx-multi", "multi",
                                                      "--layers"))
        rows += [cold, rebuild, unrelated]

    if "layers" in only:
        cold, cached = Row("41 steps, cold"), Row("41 steps, cached rebuild")
        for i in range(args.runs):
            for name, _f in tools:
                getattr(cold, name).append(build(name, f"{name}-store", work / "ctx-layers", "steps"))
                wipe(name, f"{name}-store", "steps")
        for name, _f in tools:
            build(name, f"{name}-store", work / "ctx-layers", "steps", "--layers")
        for i in range(args.runs):
            for name, _f in tools:
                getattr(cached, name).append(build(name, f"{name}-store", work / "ctx-layers", "steps", "--layers"))
        rows += [cold, cached]

    if "push" in only:
        # a new registry (storage and port) for every push: otherwise both tools mount the blobs
        # they remember pushing to another repository instead of uploading them
        for comp in ("zstd", "gzip"):
            build("bale", "bale-store", work / "ctx-copy", f"bench/big:{comp}", "--compression", comp)
            if t.buildah:
                build("buildah", "buildah-store", work / "ctx-copy", f"bench/big:{comp}")
        for comp in ("zstd", "gzip"):
            push, pull = Row(f"push, {comp}", kept), Row(f"pull into a new store, {comp}", kept)
            for i in range(args.runs):
                for name, _f in tools:
                    proc, host = start_registry(work, f"{name}-{comp}-{i}")
                    try:
                        ref = f"{host}/bench/big:{comp}"
                        if name == "bale":
                            push.bale.append(run_measured(bale("bale-store", "push", "-q", "--tls-verify=false",
                                                               f"bench/big:{comp}", f"docker://{ref}")))
                            pull.bale.append(run_measured(bale(f"bale-pull-{comp}{i}", "pull", "-q",
                                                               "--tls-verify=false", f"docker://{ref}")))
                        else:
                            push.buildah.append(run_measured(bh("buildah-store", "push", "-q", "--tls-verify=false",
                                                                "--compression-format", comp, f"bench/big:{comp}",
                                                                f"docker://{ref}")))
                            pull.buildah.append(run_measured(bh(f"buildah-pull-{comp}{i}", "pull", "-q",
                                                                "--tls-verify=false", f"docker://{ref}")))
                    finally:
                        proc.terminate()
                        proc.wait()
                        subprocess.run(["rm", "-rf", str(work / f"{name}-pull-{comp}{i}"),
                                        str(work / f"{name}-pull-{comp}{i}-run"), str(work / f"registry-{name}-{comp}-{i}")])
            rows += [push, pull]

    text = print_table(rows, refs, args)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if not t.buildah:
        print("buildah not installed: no comparison (apt-get install buildah)")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(work)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
