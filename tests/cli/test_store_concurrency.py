"""One store, many bale processes (issue 7 item 8, issue 12 items 5 and 8): concurrent pulls,
`bale from` and builds leave a consistent store; prune during a build does not break it; rmi and
prune leave no unpacked layer, snapshot or cache entry behind; what a kill -9 leaves is removed by
the next bale command. Everything runs as real `bale` processes; the store is checked by reading
its files directly (every blob re-hashed) and by skopeo, an independent reader, on an export."""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from tests.fixtures.images import REPO, load_busybox, run_bale
from tests.helpers.oci_reader import flatten, read_layout


def _bale_popen(root: Path, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "builder.cli.main", "--root", str(root), *args], env=env,
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _layout(path: Path, files: dict[str, bytes]) -> Path:
    """A one-layer OCI layout (ref ``latest``) holding ``files``, written with tarfile and gzip."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
            t.addfile(ti, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        return {"digest": "sha256:" + d, "size": len(data)}
    cfg = json.dumps({"architecture": "amd64" if os.uname().machine == "x86_64" else "arm64", "os": "linux",
                      "rootfs": {"type": "layers",
                                 "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]}}).encode()
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(cfg)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                  **put(layer)}]}).encode()
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(man),
         "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    return path


def _check_store(root: Path, tmp: Path) -> list[dict[str, object]]:
    """Every blob file hashes to its name; every image's manifest, config and layers are there;
    each image exported by `bale push` reads back through skopeo (which verifies every digest)."""
    blobs = root / "blobs" / "sha256"
    for p in blobs.iterdir():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name, f"corrupt blob {p.name}"
    images = json.loads(run_bale(["images", "--format", "json"], root=root).stdout)
    for i, img in enumerate(images):
        man = json.loads((blobs / img["digest"].split(":")[1]).read_text())
        for d in [man["config"], *man["layers"]]:
            assert (blobs / d["digest"].split(":")[1]).is_file(), f"image {img['id'][:12]}: {d['digest']} missing"
        out = tmp / f"export-{i}"
        run_bale(["push", img["id"], f"oci:{out}:x"], root=root)
        subprocess.run(["skopeo", "copy", "--quiet", f"oci:{out}:x", f"oci:{tmp}/copy-{i}:x"], check=True,
                       capture_output=True)
    return images


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _context(tmp: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    ctx = tmp / f"ctx-{hashlib.sha256(dockerfile.encode()).hexdigest()[:8]}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (ctx / name).write_text(text)
    return ctx


def test_many_processes_on_one_store(tmp_path, busybox_layout):
    """3 pulls of different images, 4 `bale from busybox` and 2 builds, all at once."""
    root = tmp_path / "store"
    load_busybox(root, busybox_layout)
    layouts = [_layout(tmp_path / f"img{i}", {f"file{i}": f"content {i}\n".encode() * (i + 1)}) for i in range(3)]
    ctxs = [_context(tmp_path, f"FROM busybox\nRUN echo {i} > /built\nCOPY f /f\n", {"f": f"f{i}\n"})
            for i in range(2)]
    procs = [_bale_popen(root, "pull", "-q", f"oci:{l}:latest") for l in layouts]
    procs += [_bale_popen(root, "from", "busybox") for _ in range(4)]
    procs += [_bale_popen(root, "bud", "-q", "--layers", "-t", f"built{i}", str(c)) for i, c in enumerate(ctxs)]
    results = [(p.args, *p.communicate(timeout=300), p.returncode) for p in procs]
    for args, out, err, rc in results:
        assert rc == 0, f"{args}: exit {rc}: {err}"
    names = [out.strip() for _, out, _, _ in results[3:7]]
    assert len(set(names)) == 4, names  # 4 distinct working containers, none lost
    listed = json.loads(run_bale(["containers", "--format", "json"], root=root).stdout)
    assert sorted(c["name"] for c in listed) == sorted(names) and len({c["id"] for c in listed}) == 4
    images = _check_store(root, tmp_path)
    pulled = {out.strip() for _, out, _, _ in results[:3]}
    assert pulled <= {i["id"] for i in images} and len(pulled) == 3
    assert {"localhost/built0:latest", "localhost/built1:latest"} <= {n for i in images for n in i["names"]}


def test_rmi_all_and_prune_all_leave_nothing(tmp_path, busybox_layout):
    root = tmp_path / "store"
    load_busybox(root, busybox_layout)
    ctx = _context(tmp_path, "FROM busybox AS b\nRUN echo b > /b\nFROM busybox\nCOPY --from=b /b /b\n"
                             "RUN --mount=type=cache,target=/c echo c > /c/c\nCOPY f /f\n", {"f": "f\n"})
    run_bale(["bud", "-q", "--layers", "-t", "one", str(ctx)], root=root)
    ctr = run_bale(["from", "one"], root=root).stdout.strip()
    run_bale(["run", ctr, "--", "sh", "-c", "echo x > /x"], root=root)
    run_bale(["commit", ctr, "two"], root=root)
    before = _tree(root)
    assert any("/layers/" in p for p in before) and any(p.startswith("cache/") for p in before)
    assert any(p.startswith("cache-mounts/") for p in before)
    run_bale(["rmi", "--all", "--force"], root=root)
    run_bale(["rm", "--all"], root=root)
    line = run_bale(["prune", "-a"], root=root).stdout.strip().splitlines()[-1]
    assert line.startswith("freed ") and line.endswith(")"), line
    left = [p for p in _tree(root) if not p.startswith(("snapshots/.probe",))]
    expected_dirs = {"blobs", "blobs/sha256", "cache", "cache-mounts", "containers", "diffids", "diffids/sha256",
                     "leases", "snapshots", "tmp", "images.json", "lock", "probe.json", "sources",
                     "sources/sha256"}
    drivers = {p for p in left if p.startswith("snapshots/") and p.count("/") == 1}
    expected_dirs |= drivers | {f"{d}/{sub}" for d in drivers for sub in ("layers", "containers")}
    assert set(left) <= expected_dirs, sorted(set(left) - expected_dirs)
    print("store after rmi --all and prune -a:", left)


def test_prune_all_in_a_loop_during_a_build(tmp_path, busybox_layout):
    """`bale prune -a` runs again and again while a --layers build runs slow RUNs: the build's
    base (removed as an image by the first prune), its new layers, cache entries and snapshots
    are leased, so the build succeeds and its exported image is complete."""
    root = tmp_path / "store"
    load_busybox(root, busybox_layout)
    ctx = _context(tmp_path, "FROM busybox\nRUN sleep 2 && echo a > /a\nCOPY f /f\nRUN sleep 2 && echo b > /b\n"
                             "RUN --mount=type=cache,target=/c sleep 1 && cat /f > /c/f && cp /c/f /g\n",
                   {"f": "from the context\n"})
    out = tmp_path / "out"
    build = _bale_popen(root, "bud", "--layers", "-t", "result", "--output", f"type=oci,dest={out}", str(ctx))
    stderr: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert build.stderr is not None
        for line in build.stderr:
            stderr.append(line)
            if "STEP 2/" in line:
                started.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(120), "".join(stderr)
    prunes = []
    while build.poll() is None:
        r = run_bale(["prune", "-a"], root=root, check=False)
        assert r.returncode == 0, r.stderr
        prunes.append(r.stdout.strip().splitlines()[-1])
    reader.join(10)
    assert build.returncode == 0, "".join(stderr)
    assert len(prunes) >= 3, prunes
    assert any("1 image" in p for p in prunes)  # busybox went while the build ran
    _, config, layers = read_layout(out, "latest")
    fs = flatten(layers)
    assert fs["/a"].content == b"a\n" and fs["/b"].content == b"b\n" and fs["/g"].content == b"from the context\n"
    assert "/bin/busybox" in fs and fs["/f"].content == b"from the context\n"
    assert len(layers) == 5 and len(config["rootfs"]["diff_ids"]) == 5
    subprocess.run(["skopeo", "inspect", f"oci:{out}:latest"], check=True, capture_output=True)


def _lease_files(root: Path) -> list[Path]:
    return sorted((root / "leases").glob("*.lease"))


def _stale(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _snapshots(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.glob("snapshots/*/containers/*"))


def test_kill_9_mid_run_then_the_next_command_cleans_up(tmp_path, busybox_layout):
    root = tmp_path / "store"
    load_busybox(root, busybox_layout)
    ctx = _context(tmp_path, "FROM busybox\nCOPY big /big\nRUN echo started > /started && sleep 47\n",
                   {"big": "x" * 100000})
    build = _bale_popen(root, "bud", "--layers", "-t", "killed", str(ctx))
    deadline = time.time() + 120
    while time.time() < deadline and not any(
            (Path(s) / "upper" / "started").exists() or (Path(s) / "rootfs" / "started").exists()
            for s in root.glob("snapshots/*/containers/*")):
        time.sleep(0.1)
    snaps = _snapshots(root)
    tmp_dirs = os.listdir(root / "tmp")
    assert snaps and tmp_dirs, (snaps, tmp_dirs)
    build.send_signal(signal.SIGKILL)
    build.communicate(timeout=30)
    # a killed pull or commit: a process that took a lease, wrote temp files and a snapshot record, died
    code = ("import os, sys; from builder.image.store import Store; s = Store(sys.argv[1]); "
            "(s.tmp_dir / 'blob-partial').write_bytes(b'x' * 4096); "
            "s.lease.record('snapshot', 'overlay/' + 'ab' * 32); os._exit(9)")
    subprocess.run([sys.executable, "-c", code, str(root)], env=dict(os.environ, PYTHONPATH=str(REPO)))
    fake = root / "snapshots" / "overlay" / "containers" / ("ab" * 32)
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "upper").mkdir(exist_ok=True)
    dead = _lease_files(root)
    deadline = time.time() + 30  # the killed build's namespace helpers go with it (parent-death signal)
    while time.time() < deadline and not all(_stale(p) for p in dead):
        time.sleep(0.1)
    assert dead and all(_stale(p) for p in dead)
    assert len(os.listdir(root / "tmp")) == len(tmp_dirs) + 1

    ctr = run_bale(["from", "busybox"], root=root).stdout.strip()  # any command that works on snapshots
    state = json.loads((root / "containers" / ctr / "state.json").read_text())
    assert _snapshots(root) == [f"snapshots/{state['driver']}/containers/{state['id']}"]
    assert os.listdir(root / "tmp") == [] and _lease_files(root) == []
    leftovers = [p for p in _tree(root) if "/." in "/" + p and ".probe" not in p]
    assert leftovers == []
    # and the killed build's layer cache does not wedge the next build of the same steps
    r = run_bale(["bud", "-q", "--layers", "-t", "again", str(_context(
        tmp_path, "FROM busybox\nCOPY big /big\nRUN echo again > /again\n", {"big": "x" * 100000}))], root=root)
    assert r.returncode == 0



def test_parallel_stages_with_missing_bases(tmp_path):
    """Two stages FROM different images not in the store, both COPY --from a third one, run with
    --jobs 2: every image is resolved and pulled once, before the stages run in parallel
    (FROM while the graph is built, COPY --from by scheduler.prefetch_images)."""
    root = tmp_path / "store"
    lays = [_layout(tmp_path / f"lay{i}", {f"file{i}": f"{i}\n".encode()}) for i in range(3)]
    ctx = _context(tmp_path, f"FROM oci:{lays[0]}:latest AS a\nCOPY --from=oci:{lays[2]}:latest /file2 /a2\n"
                             f"FROM oci:{lays[1]}:latest AS b\nCOPY --from=oci:{lays[2]}:latest /file2 /b2\n"
                             "FROM scratch\nCOPY --from=a / /\nCOPY --from=b / /\n")
    run_bale(["bud", "-q", "--jobs", "2", "-t", "two", str(ctx)], root=root)
    images = _check_store(root, tmp_path)
    assert len(images) == 4 and sum(1 for i in images if not i["names"]) == 3
    run_bale(["push", "two", f"oci:{tmp_path}/two:latest"], root=root)
    fs = flatten(read_layout(tmp_path / "two", "latest")[2])
    assert {p: fs[p].content for p in ("/file0", "/file1", "/a2", "/b2")} == \
        {"/file0": b"0\n", "/file1": b"1\n", "/a2": b"2\n", "/b2": b"2\n"}


def test_four_concurrent_from_give_four_containers(tmp_path, busybox_layout):
    """Issue 12: two of four concurrent `bale from busybox` got the same name (3 rounds of 5)."""
    root = tmp_path / "store"
    load_busybox(root, busybox_layout)
    for rnd in range(5):
        procs = [_bale_popen(root, "from", "busybox") for _ in range(4)]
        outs = [(p.communicate(timeout=120), p.returncode) for p in procs]
        assert all(rc == 0 for _, rc in outs), outs
        names = [o.strip() for (o, _), _ in outs]
        assert len(set(names)) == 4, (rnd, names)
    listed = json.loads(run_bale(["containers", "--format", "json"], root=root).stdout)
    assert len(listed) == 20 and len({c["name"] for c in listed}) == 20 and len({c["id"] for c in listed}) == 20


def test_twenty_builds_leave_no_temp_files(tmp_path, busybox_layout):
    """After 20 builds (and the working containers they need), the store holds no temp dir, lease or
    half-made layer, and $TMPDIR is as before."""
    root = tmp_path / "store"
    load_busybox(root, busybox_layout)
    tmpdir = tmp_path / "TMPDIR"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    for i in range(20):
        ctx = _context(tmp_path, f"FROM busybox\nRUN echo {i} > /i\nCOPY f /f\n", {"f": f"{i}\n"})
        run_bale(["bud", "-q", "--layers", "-t", f"b{i % 3}", str(ctx)], root=root, env=env)
    assert os.listdir(tmpdir) == []
    assert os.listdir(root / "tmp") == [] and os.listdir(root / "leases") == []
    assert [p for p in _tree(root) if "/." in "/" + p and ".probe" not in p] == []
    assert _snapshots(root) == []


def test_rootless_gc_removes_layers_owned_by_subordinate_ids(unprivileged_user, user_tmp, busybox_layout):
    """As an unprivileged user, layers and snapshots hold files of subordinate ids that the user
    cannot remove directly: rmi/prune remove them inside the user namespace."""
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN mkdir -m 700 /owned && echo s > /owned/s && "
                                    "chown -R 1234:4321 /owned\n")
    os.chown(ctx, u.uid, u.gid)
    os.chown(ctx / "Dockerfile", u.uid, u.gid)
    u.bale("bud", "-q", "--layers", "-t", "owned", str(ctx), root=root)
    assert u.bale("from", "owned", root=root).stdout.strip()
    owned = [p for p in root.glob("snapshots/*/layers/*/diff/owned")]
    assert owned and all(p.stat().st_uid != u.uid for p in owned)
    u.bale("rmi", "--all", "--force", root=root)
    u.bale("rm", "--all", root=root)
    line = u.bale("prune", "-a", root=root).stdout.strip().splitlines()[-1]
    assert line.startswith("freed ") and "0 unpacked layers" not in line, line
    assert list(root.glob("snapshots/*/layers/*")) == [] and list(root.glob("snapshots/*/containers/*")) == []
    assert list((root / "blobs" / "sha256").iterdir()) == [] and os.listdir(root / "tmp") == []
