"""Scripted builds (from/run/copy/add/config/commit) as a real unprivileged user,
the result run by podman; the same script under chroot isolation as root where
neither user namespaces nor mounts are allowed gives the same files."""
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.fixtures.images import REPO, run_bale

pytestmark = [pytest.mark.slow]

SCRIPT_RUN = ("echo hi > /hello; mkdir /data; echo x > /data/f; chown 1234:4321 /data /data/f; "
              "chmod 4755 /hello; rm /bin/ls; rm -rf /home/app")


def _context(base: Path, uid: int, gid: int) -> Path:
    ctx = base / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "app" / "run.sh").write_text("#!/bin/sh\necho app\n")
    (ctx / "app" / "conf").write_text("c=1\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ti = tarfile.TarInfo("pkg/readme")
        ti.size, ti.uid, ti.gid = 6, 42, 42
        t.addfile(ti, io.BytesIO(b"readme"))
    (ctx / "pkg.tar.gz").write_bytes(gzip.compress(buf.getvalue()))
    for p in [ctx, *ctx.rglob("*")]:
        os.chown(p, uid, gid)
    return ctx


def _script(bale, ctx: Path) -> str:
    """The buildah-style script; ``bale(*args)`` runs one verb and returns stdout."""
    ctr = bale("from", "busybox").strip()
    bale("run", ctr, "--", "sh", "-c", SCRIPT_RUN)
    bale("copy", "--contextdir", str(ctx), "--chown", "1000:1000", "--chmod", "0640", ctr, str(ctx / "app"), "/app")
    bale("add", "--contextdir", str(ctx), ctr, str(ctx / "pkg.tar.gz"), "/opt")
    bale("config", "--cmd", '["/bin/sh", "-c", "cat /hello"]', "--env", "K=V", "--workingdir", "/app",
         "--user", "1000:1000", "--label", "k=v", "--port", "8080", "--volume", "/data",
         "--stop-signal", "SIGTERM", "--healthcheck", "CMD true", ctr)
    bale("commit", "--timestamp", "1700000000", ctr, "myimage")
    return ctr


def _layer_members(archive: Path) -> dict:
    """Metadata of every entry in the image's last layer, read with the stdlib from a docker-archive."""
    with tarfile.open(archive) as t:
        man = json.load(t.extractfile("manifest.json"))[0]
        layer = t.extractfile(man["Layers"][-1]).read()
        cfg = json.load(t.extractfile(man["Config"]))
    with tarfile.open(fileobj=io.BytesIO(layer)) as lt:
        return {m.name: (m.type, m.uid, m.gid, m.mode, m.linkname) for m in lt.getmembers()}, cfg


def _podman(tmp: Path) -> list[str]:
    runroot = tempfile.mkdtemp(prefix="pr-", dir="/tmp")
    return ["podman", "--root", str(tmp / "podman-root"), "--runroot", runroot, "--storage-driver", "vfs"]


@pytest.fixture
def user_store(unprivileged_user, user_tmp, busybox_layout):
    return unprivileged_user.busybox_store(user_tmp, busybox_layout)


def test_rootless_script_runs_under_podman(unprivileged_user, user_tmp, user_store, tmp_path):
    u = unprivileged_user
    ctx = _context(user_tmp, u.uid, u.gid)
    ctr = _script(lambda *a: u.bale(*a, root=user_store).stdout, ctx)
    assert ctr == "busybox-working-container"
    out = user_tmp / "image.tar"
    u.bale("push", "myimage", f"docker-archive:{out}:localhost/myimage:latest", root=user_store)
    members, cfg = _layer_members(out)
    assert members["data"][1:3] == (1234, 4321) and members["data/f"][1:3] == (1234, 4321)
    assert members["hello"][3] == 0o4755 and members["bin/.wh.ls"][0] == tarfile.REGTYPE
    assert members["home/.wh.app"] and members["app/conf"][1:4] == (1000, 1000, 0o640)
    assert members["opt/pkg/readme"][1:3] == (42, 42)
    assert not any(n.startswith(("proc", "sys", "dev", "etc/hosts", "etc/resolv")) for n in members)
    c = cfg["config"]
    assert c["Cmd"] == ["/bin/sh", "-c", "cat /hello"] and "K=V" in c["Env"] and c["WorkingDir"] == "/app"
    assert c["User"] == "1000:1000" and c["Labels"] == {"k": "v"} and "8080/tcp" in c["ExposedPorts"]
    assert c["Volumes"] == {"/data": {}} and c["StopSignal"] == "SIGTERM"
    assert c["Healthcheck"]["Test"] == ["CMD-SHELL", "CMD true"]
    if not shutil.which("podman"):
        pytest.skip("podman not installed: the image was checked with tarfile only")
    podman = _podman(tmp_path)
    subprocess.run(podman + ["load", "-i", str(out)], check=True, capture_output=True)
    run = subprocess.run(podman + ["run", "--rm", "--network", "host", "--user", "0", "--ulimit",
                                   "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "localhost/myimage:latest",
                                   "sh", "-c", "cat /hello; stat -c '%u:%g %a %n' /data /data/f /hello /app/conf "
                                   "/opt/pkg/readme; ls /bin/ls /home/app 2>&1; true"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "hi"
    assert "1234:4321 755 /data" in lines and "1234:4321 644 /data/f" in lines
    assert "0:0 4755 /hello" in lines and "1000:1000 640 /app/conf" in lines and "42:42 644 /opt/pkg/readme" in lines
    assert "No such file" in run.stdout  # deleted base files stay deleted


def test_failures_are_one_line_and_keep_the_container(unprivileged_user, user_tmp, user_store):
    u = unprivileged_user
    b = lambda *a, **kw: u.bale(*a, root=user_store, check=False, **kw)  # noqa: E731
    r = b("run", "nosuch", "--", "true")
    assert r.returncode == 1 and r.stderr.strip() == "bale: container nosuch: no such working container"
    ctr = b("from", "busybox").stdout.strip()
    r = b("run", ctr, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert r.returncode == 7 and r.stdout == "out\n" and "err" in r.stderr and "status 7" in r.stderr
    assert ctr in b("containers", "--format", "{{.Name}}").stdout
    r = b("run", "--user", "nobody2", ctr, "--", "true")
    assert r.returncode == 1 and "user nobody2 not found in /etc/passwd" in r.stderr
    r = b("copy", "--contextdir", str(user_tmp / "store"), ctr, "/etc/passwd", "/x")
    assert r.returncode == 2 and "outside the context directory" in r.stderr
    r = b("from", "no-such-image", "--pull", "never")
    assert r.returncode == 1 and "no-such-image" in r.stderr and r.stderr.count("\n") == 1
    b("rm", ctr)
    assert b("containers", "-q").stdout.strip() == ""


def test_single_mapping_fallback_warns(unmapped_user, tmp_path, busybox_layout):
    from tests.fixtures.users import _make_traversable
    u = unmapped_user
    _make_traversable(tmp_path)
    base = u.tmpdir(tmp_path)
    lay = base / "busybox"
    shutil.copytree(busybox_layout, lay)
    for p in [lay, *lay.rglob("*")]:
        os.chown(p, u.uid, u.gid)
    root = base / "store"
    u.bale("pull", "-q", f"oci:{lay}:latest", root=root)
    ctr = u.bale("from", f"oci:{lay}:latest", root=root, check=False)
    assert "single-id mapping" in ctr.stderr
    name = ctr.stdout.strip()
    ok = u.bale("run", name, "--", "sh", "-c", "echo fine > /f", root=root, check=False)
    assert ok.returncode == 0
    bad = u.bale("run", name, "--", "chown", "1234", "/f", root=root, check=False)
    assert bad.returncode != 0 and "Invalid argument" in bad.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the restricted environment is made by root")
def test_chroot_isolation_without_namespaces_matches_rootless(unprivileged_user, user_tmp, user_store, tmp_path,
                                                              busybox_layout):
    # rootless reference
    u = unprivileged_user
    ctx = _context(user_tmp, u.uid, u.gid)
    _script(lambda *a: u.bale(*a, root=user_store).stdout, ctx)
    ref = user_tmp / "ref.tar"
    u.bale("push", "myimage", f"docker-archive:{ref}:localhost/myimage:latest", root=user_store)
    # root with neither user namespaces nor mounts
    root = tmp_path / "chroot-store"
    run_bale(["pull", "-q", f"oci:{busybox_layout}:latest"], root=root)
    run_bale(["tag", run_bale(["images", "-q", "--no-trunc"], root=root).stdout.split()[0], "busybox"], root=root)
    helper = str(REPO / "tests" / "helpers" / "no_namespaces.py")
    notices = []

    def bale(*args):
        r = subprocess.run([sys.executable, helper, sys.executable, "-m", "builder.cli.main", "--root", str(root),
                            *args], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert r.returncode == 0, r.stderr
        notices.append(r.stderr)
        return r.stdout
    _script(bale, ctx)
    assert any("using chroot isolation with the native driver" in n for n in notices)
    info = json.loads(bale("info", "--format", "json"))
    assert info["isolation"] == "chroot" and info["storage_driver"] == "native"
    got = tmp_path / "chroot.tar"
    run_bale(["push", "myimage", f"docker-archive:{got}:localhost/myimage:latest"], root=root)
    ref_members, _ = _layer_members(ref)
    got_members, _ = _layer_members(got)
    assert got_members == ref_members


def test_copy_from_container_and_image_and_squash(unprivileged_user, user_tmp, user_store):
    u = unprivileged_user
    b = lambda *a, **kw: u.bale(*a, root=user_store, **kw)  # noqa: E731
    src = b("from", "--name", "src", "busybox").stdout.strip()
    b("run", src, "--", "sh", "-c", "mkdir /out && echo made > /out/f && chown 7:7 /out/f")
    dst = b("from", "--name", "dst", "busybox").stdout.strip()
    b("copy", "--from", src, dst, "/out/f", "/copied")
    b("copy", "--from", "busybox", "--chown", "app:app", dst, "/etc/group", "/group-copy")
    r = b("copy", "--from", src, dst, "/nope", "/x", check=False)
    assert r.returncode == 1 and "/nope" in r.stderr
    b("commit", "--squash", dst, "squashed")
    out = user_tmp / "sq"
    b("push", "squashed", f"oci:{out}:1")
    from tests.helpers.oci_reader import flatten, read_layout
    manifest, config, layers = read_layout(out, "1")
    assert len(layers) == 1 and len(config["history"]) == 1
    fs = flatten(layers)
    assert fs["/copied"].content == b"made\n" and fs["/copied"].info.uid == 0
    assert fs["/group-copy"].info.uid == 1000 and "/bin/busybox" in fs


def test_config_env_expands_from_the_image_not_from_bale(store_with_busybox):
    """`bale config --env 'P=$PATH:/x'` reads the image's PATH, never bale's environment: a host
    variable (a CI token) must not end up in the image (buildah config.go expands with
    os.Expand over the builder's Env; an unset variable is reported, not taken from the host)."""
    env = {"HOSTSECRET": "leaked-token", "PATH": "/host/only/bin:" + os.environ.get("PATH", "")}
    root = store_with_busybox

    def bale(*args: str) -> str:
        return run_bale(list(args), root=root, env=env).stdout
    ctr = bale("from", "busybox").strip()
    r = run_bale(["config", "--env", "S=${HOSTSECRET}", "--env", "P=$PATH:/opt/bin", "--env", "Q=${P}x", ctr],
                 root=root, env=env)
    assert "HOSTSECRET" in r.stderr  # reported as unset, in one warning line
    iid = bale("commit", ctr, "envtest").strip()
    cfg = json.loads(bale("inspect", "--type", "image", "envtest"))
    text = json.dumps(cfg)
    assert "leaked-token" not in text and "/host/only/bin" not in text
    image_env = dict(e.split("=", 1) for e in cfg["OCIv1"]["config"]["Env"])
    assert image_env["S"] == ""
    assert image_env["P"] == image_env["PATH"] + ":/opt/bin"
    assert image_env["Q"] == image_env["P"] + "x"
    assert iid
