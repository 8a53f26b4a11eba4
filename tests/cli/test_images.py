"""Image commands end to end through `bale`, checked by independent readers."""
import json
import shutil
import subprocess
import tarfile

import pytest

from tests.fixtures.images import run_bale

needs_skopeo = pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo not installed: no independent reader")


def skopeo_inspect(ref, *extra):
    out = subprocess.run(["skopeo", "inspect", "--raw", *extra, ref], check=True, capture_output=True)
    import hashlib
    return "sha256:" + hashlib.sha256(out.stdout).hexdigest(), json.loads(out.stdout)


def test_pull_layout_images_inspect_tag_rmi(bale, busybox_layout):
    image_id = bale("pull", "--quiet", f"oci:{busybox_layout}:latest").stdout.strip()
    assert len(image_id) == 64
    bale("tag", image_id, "busybox", "example.com/tools/bb:1")
    listed = json.loads(bale("images", "--format", "json").stdout)
    assert listed[0]["names"] == ["localhost/busybox:latest", "example.com/tools/bb:1"]
    table = bale("images").stdout
    assert "localhost/busybox" in table and image_id[:12] in table
    cfg = json.loads(bale("inspect", "busybox").stdout)
    assert cfg["Config"]["config"]["Cmd"] == ["sh"] and cfg["Id"] == image_id
    man = json.loads(bale("inspect", "--type", "manifest", "busybox").stdout)
    assert man["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    out = bale("rmi", "busybox").stdout  # one of two names: untag only
    assert "untagged: localhost/busybox:latest" in out
    bale("rmi", "example.com/tools/bb:1")
    assert json.loads(bale("images", "--format", "json").stdout) == []
    assert list((bale.root / "blobs" / "sha256").iterdir()) == []


def test_inspect_layout_without_pulling(bale, busybox_layout):
    cfg = json.loads(bale("inspect", f"oci:{busybox_layout}:latest").stdout)
    assert cfg["Config"]["rootfs"]["diff_ids"]
    assert not (bale.root / "images.json").exists()


def test_platform_selection(bale, multiarch_layout):
    cfg = json.loads(bale("inspect", "--platform", "linux/s390x", f"oci:{multiarch_layout}:latest").stdout)
    assert cfg["Architecture"] == "s390x" and cfg["Config"]["config"]["Cmd"] == ["/s390x"]
    host = json.loads(bale("inspect", f"oci:{multiarch_layout}:latest").stdout)
    assert host["Architecture"] != "s390x" and host["IndexDigest"]
    r = bale("inspect", "--platform", "linux/mips", f"oci:{multiarch_layout}:latest", check=False)
    assert r.returncode == 1 and "no image for platform linux/mips" in r.stderr


@needs_skopeo
@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_push_to_layout_and_archives_read_by_skopeo(bale, busybox_layout, tmp_path, fmt):
    bale("pull", "-q", f"oci:{busybox_layout}:latest")
    bale("tag", bale("images", "-q", "--no-trunc").stdout.split()[0], "bb")
    out = tmp_path / "out"
    bale("push", "--format", fmt, "bb", f"oci:{out}:v1")
    digest, man = skopeo_inspect(f"oci:{out}:v1")
    assert man["layers"] and digest == bale("inspect", "--format", "{{.Digest}}", f"oci:{out}:v1").stdout.strip()
    bale("push", "bb", f"oci-archive:{tmp_path}/bb.tar:v1")
    skopeo_inspect(f"oci-archive:{tmp_path}/bb.tar:v1")
    bale("push", "bb", f"docker-archive:{tmp_path}/bb-docker.tar:bb:latest")
    _, dman = skopeo_inspect(f"docker-archive:{tmp_path}/bb-docker.tar")
    assert dman["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    with tarfile.open(tmp_path / "bb-docker.tar") as t:
        names = t.getnames()
    assert "manifest.json" in names and "repositories" in names


@pytest.mark.skipif(not shutil.which("podman"), reason="podman not installed: cannot check docker-archive loading")
def test_docker_archive_loads_in_podman(bale, busybox_layout, tmp_path):
    bale("pull", "-q", f"oci:{busybox_layout}:latest")
    bale("tag", bale("images", "-q", "--no-trunc").stdout.split()[0], "bb")
    bale("push", "bb", f"docker-archive:{tmp_path}/bb.tar:localhost/bb:loaded")
    import tempfile
    proot = tmp_path / "podman"
    runroot = tempfile.mkdtemp(prefix="pr-", dir="/tmp")  # podman wants a runroot under 50 characters
    podman = ["podman", "--root", str(proot / "root"), "--runroot", runroot, "--storage-driver", "vfs"]
    out = subprocess.run(podman + ["load", "-i", str(tmp_path / "bb.tar")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    imgs = subprocess.run(podman + ["images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                          text=True, check=True).stdout
    assert "localhost/bb:loaded" in imgs
    run = subprocess.run(podman + ["run", "--rm", "--network", "host", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
                                   "localhost/bb:loaded", "sh", "-c", "echo ok-from-podman"],
                         capture_output=True, text=True)
    shutil.rmtree(runroot, ignore_errors=True)
    assert run.returncode == 0 and "ok-from-podman" in run.stdout, run.stderr


def test_pull_from_archives_round_trip(bale, busybox_layout, tmp_path):
    bale("pull", "-q", f"oci:{busybox_layout}:latest")
    iid = bale("images", "-q", "--no-trunc").stdout.split()[0]
    bale("push", iid, f"docker-archive:{tmp_path}/d.tar:bb:1")
    bale("push", iid, f"oci-archive:{tmp_path}/o.tar:1")
    other = tmp_path / "other"
    id1 = run_bale(["pull", "-q", f"docker-archive:{tmp_path}/d.tar"], root=other).stdout.strip()
    id2 = run_bale(["pull", "-q", f"oci-archive:{tmp_path}/o.tar:1"], root=other).stdout.strip()
    assert id1 == id2 == iid  # the config is the same blob whichever way it travelled
    names = json.loads(run_bale(["images", "--format", "json"], root=other).stdout)[0]["names"]
    assert "localhost/bb:1" in names


def test_bad_inputs_one_line_errors(bale, busybox_layout, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(busybox_layout, broken)
    man_digest = json.loads((broken / "index.json").read_text())["manifests"][0]["digest"]
    man = json.loads((broken / "blobs/sha256" / man_digest[7:]).read_text())
    layer = broken / "blobs/sha256" / man["layers"][0]["digest"][7:]
    layer.write_bytes(layer.read_bytes()[:-10] + b"0123456789")
    r = bale("pull", f"oci:{broken}:latest", check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "digest" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(bale("images", "--format", "json").stdout) == []
    (broken / "blobs/sha256" / man_digest[7:]).write_text("{not json")
    r = bale("pull", f"oci:{broken}:latest", check=False)
    assert r.returncode == 1 and "digest mismatch" in r.stderr
    import hashlib
    bad = b"{not json"
    (broken / "blobs/sha256" / hashlib.sha256(bad).hexdigest()).write_bytes(bad)
    index = json.loads((broken / "index.json").read_text())
    index["manifests"][0].update(digest="sha256:" + hashlib.sha256(bad).hexdigest(), size=len(bad))
    (broken / "index.json").write_text(json.dumps(index))
    r = bale("pull", f"oci:{broken}:latest", check=False)
    assert r.returncode == 1 and "malformed JSON" in r.stderr and r.stderr.count("\n") == 1
    r = bale("pull", "nosuch:thing", check=False)
    assert r.returncode != 0 and r.stderr.startswith("bale: ")
    r = bale("inspect", "absent-image", check=False)
    assert r.returncode == 1 and "absent-image" in r.stderr
    r = bale("--debug", "pull", f"oci:{broken}:latest", check=False)
    assert "Traceback" in r.stderr
