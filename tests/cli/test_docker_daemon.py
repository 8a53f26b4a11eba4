"""docker-daemon:NAME:TAG as a push and pull transport (issue 11 item 5), against podman's
Docker-compatible API service (`podman system service`) on a socket this test makes.
The seed practice: build with bud, push to docker-daemon:, then run it (here `podman run`
on the same podman storage; runc, with explicit ulimits, as rootful podman needs here)."""
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not shutil.which("podman") or not shutil.which("skopeo"),
                                reason="podman (the engine) and skopeo (the independent writer) are needed")


class Podman:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.short = Path(tempfile.mkdtemp(prefix="bale-pd-", dir="/tmp"))  # podman: runroot < 50 chars
        self.sock = self.short / "engine.sock"
        self.flags = ["--root", str(base / "root"), "--runroot", str(self.short / "run"), "--runtime", "runc",
                      "--cgroup-manager", "cgroupfs", "--events-backend", "none"]
        self.env = {"DOCKER_HOST": f"unix://{self.sock}"}
        self.proc = subprocess.Popen(["podman", *self.flags, "system", "service", "--time=0", f"unix://{self.sock}"],
                                     stdout=subprocess.DEVNULL, stderr=open(base / "service.log", "wb"))
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not start: {(base / 'service.log').read_text()}")
            time.sleep(0.1)

    def run(self, *args: str, **kw: object) -> subprocess.CompletedProcess:
        return subprocess.run(["podman", *self.flags, *args], capture_output=True, text=True, timeout=120,
                              check=True, **kw)  # type: ignore[call-overload]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        subprocess.run(["podman", *self.flags, "rmi", "--all", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(self.short, ignore_errors=True)


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    p = Podman(tmp_path_factory.mktemp("podman"))
    yield p
    p.stop()


RUN_LIMITS = ["--net=none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


def test_bud_push_to_daemon_then_podman_run(podman, store_with_busybox, bale, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo built-by-bale > /marker\nCMD [\"cat\", \"/marker\"]\n")
    iid = bale("bud", "-q", "-t", "bale/daemon:1", str(ctx), root=store_with_busybox).stdout.strip().splitlines()[-1]
    bale("push", "bale/daemon:1", "docker-daemon:bale/daemon:1", root=store_with_busybox, env=podman.env)
    info = json.loads(podman.run("image", "inspect", "docker.io/bale/daemon:1").stdout)[0]
    assert info["Id"] == iid.removeprefix("sha256:")
    out = podman.run("run", "--rm", *RUN_LIMITS, "docker.io/bale/daemon:1").stdout
    assert out == "built-by-bale\n"


def test_bud_tag_docker_daemon_pushes(podman, store_with_busybox, bale, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nLABEL via=bud\n")
    bale("bud", "-t", "docker-daemon:bale/budtag:2", str(ctx), root=store_with_busybox, env=podman.env)
    info = json.loads(podman.run("image", "inspect", "docker.io/bale/budtag:2").stdout)[0]
    assert info["Labels"] == {"via": "bud"}


def test_pull_from_daemon_an_image_skopeo_wrote(podman, busybox_layout, bale, tmp_path):
    archive = tmp_path / "img.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{busybox_layout}:latest",
                    f"docker-archive:{archive}:test/fromskopeo:7"], check=True, capture_output=True)
    podman.run("load", "-q", "-i", str(archive))
    config_digest = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"docker-archive:{archive}"],
                                              check=True, capture_output=True).stdout)
    image_id = bale("pull", "-q", "docker-daemon:test/fromskopeo:7", env=podman.env).stdout.strip()
    rec = json.loads(bale("images", "--format", "json").stdout)[0]
    assert rec["names"] == ["docker.io/test/fromskopeo:7"] and rec["id"] == image_id
    want = subprocess.run(["skopeo", "inspect", "--format", "{{.Digest}}", f"docker-archive:{archive}"],
                          capture_output=True, text=True)
    assert config_digest["rootfs"]["diff_ids"]  # skopeo read the same archive
    # the id is the config digest: the same config podman holds
    info = json.loads(podman.run("image", "inspect", "docker.io/test/fromskopeo:7").stdout)[0]
    assert info["Id"] == image_id and want.returncode == 0


def test_daemon_errors_are_one_line(podman, bale, tmp_path):
    r = bale("pull", "docker-daemon:bale/missing:1", env=podman.env, check=False)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"bale: docker-daemon:docker.io/bale/missing:1: not known to the Docker engine at unix://{podman.sock}"]
    r = bale("pull", "docker-daemon:x:1", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}, check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "cannot talk to the Docker engine" \
        in r.stderr
    r = bale("pull", "docker-daemon:", check=False)
    assert r.returncode == 2 and "no image name" in r.stderr
