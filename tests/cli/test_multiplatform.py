"""Multi-platform builds and manifest lists (issue 11 item 4): ``bud --platform A,B`` builds
one image per platform and writes an index that skopeo (an independent reader) shows with
both platforms; a foreign platform's RUN needs a binfmt_misc emulator and fails in one line
without one, after its RUN-free stages built; ``bale manifest`` verbs and ``push --all``.

The base is a two-platform index made locally (tests/fixtures/images.py multiarch_layout:
the host's busybox and a linux/s390x image) and pushed to the test registry with
``skopeo copy --all``."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from builder.emulation import check_can_run, registered_emulator
from builder.errors import BuildError
from builder.image.oci import Platform

HOST = str(Platform.host())
FOREIGN = "linux/s390x"


def _skopeo_raw(ref: str, *extra: str) -> dict:
    out = subprocess.run(["skopeo", "inspect", "--raw", *extra, ref], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def _skopeo_config(ref: str, *extra: str) -> dict:
    out = subprocess.run(["skopeo", "inspect", "--config", "--raw", *extra, ref], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def multi_base(registry, multiarch_layout: Path) -> str:
    ref = f"{registry.host}/bale/multi-base:latest"
    subprocess.run(["skopeo", "copy", "--all", "--quiet", "--dest-tls-verify=false",
                    f"oci:{multiarch_layout}:latest", f"docker://{ref}"], check=True, capture_output=True)
    return ref


def _ctx(tmp_path: Path, text: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(text)
    (ctx / "f").write_text("payload\n")
    return ctx


def test_two_platform_build_pushes_an_index_skopeo_shows_with_both(bale, registry, multi_base, tmp_path):
    ctx = _ctx(tmp_path, f"FROM {multi_base}\nCOPY f /f\nLABEL built=multi\n")
    dest = f"{registry.host}/bale/multi-out:1"
    r = bale("bud", "--tls-verify=false", "--platform", f"{HOST},{FOREIGN}", "--iidfile", str(tmp_path / "iid"),
             "-t", f"docker://{dest}", str(ctx), env=registry.env)
    index = _skopeo_raw(f"docker://{dest}", "--tls-verify=false")
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    plats = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"])
    assert plats == sorted([HOST, FOREIGN])
    for m in index["manifests"]:  # each instance is the image of its platform, with the COPY layer
        cfg = _skopeo_config(f"docker://{registry.host}/bale/multi-out@{m['digest']}", "--tls-verify=false")
        assert cfg["architecture"] == m["platform"]["architecture"]
        assert cfg["config"]["Labels"]["built"] == "multi"
    assert (tmp_path / "iid").read_text() == "sha256:" + r.stdout.strip()
    assert "STEP 1/3: FROM" in r.stderr


def test_foreign_run_without_emulator_fails_in_one_line_after_the_run_free_stage(bale, registry, multi_base,
                                                                              tmp_path):
    ctx = _ctx(tmp_path, f"FROM {multi_base} AS base\nCOPY f /f\n\nFROM base\nRUN echo ran > /ran\n")
    r = bale("bud", "--tls-verify=false", "--platform", f"{HOST},{FOREIGN}", "--manifest", "mlist", str(ctx),
             env=registry.env, check=False)
    if registered_emulator("s390x"):  # a machine with qemu-user-static registered builds it
        assert r.returncode == 0, r.stderr
        return
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("bale: Dockerfile:5: RUN"), last
    assert "linux/s390x" in last and "qemu-s390x" in last
    assert r.stderr.count("COPY f /f") == 2  # the RUN-free stage built for both platforms
    assert "Traceback" not in r.stderr


def test_binfmt_detection_reads_the_handlers(tmp_path):
    d = tmp_path / "binfmt"
    d.mkdir()
    (d / "status").write_text("enabled\n")
    with pytest.raises(BuildError, match="qemu-aarch64"):
        check_can_run("arm64", binfmt_dir=d) if Platform.host().architecture != "arm64" else \
            check_can_run("amd64", binfmt_dir=d)
    (d / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n"
                                    "flags: POCF\noffset 0\nmagic 7f454c46\n")
    assert registered_emulator("arm64", d)
    (d / "qemu-aarch64").write_text("disabled\ninterpreter /usr/bin/qemu-aarch64-static\n")
    assert not registered_emulator("arm64", d)
    check_can_run(Platform.host().architecture, binfmt_dir=d)  # the host's own needs nothing


def test_manifest_verbs_and_push_all(bale, registry, multi_base, tmp_path):
    ctx = _ctx(tmp_path, f"FROM {multi_base}\nCOPY f /f\n")
    ids = {}
    for plat in (HOST, FOREIGN):
        ids[plat] = bale("bud", "--tls-verify=false", "--platform", plat, "-t", f"img-{plat.split('/')[1]}",
                         str(ctx), env=registry.env).stdout.strip()
    bale("manifest", "create", "mylist")
    assert bale("manifest", "exists", "mylist", check=False).returncode == 0
    assert bale("manifest", "exists", "nolist", check=False).returncode == 1
    bale("manifest", "add", "mylist", f"img-{HOST.split('/')[1]}")
    bale("manifest", "add", "--annotation", "k=v", "mylist", "img-s390x")
    idx = json.loads(bale("manifest", "inspect", "mylist").stdout)
    assert [m["platform"]["architecture"] for m in idx["manifests"]] == [HOST.split("/")[1], "s390x"]
    assert idx["manifests"][1]["annotations"] == {"k": "v"}
    # push --all to a layout and a registry: skopeo reads both platforms
    out = tmp_path / "layout"
    bale("manifest", "push", "--all", "mylist", f"oci:{out}:v1")
    raw = _skopeo_raw(f"oci:{out}:v1")
    assert len(raw["manifests"]) == 2
    cfg = _skopeo_config(f"oci:{out}:v1")  # skopeo picks the host's instance out of the index
    assert cfg["architecture"] == HOST.split("/")[1]
    bale("push", "--all", "--tls-verify=false", "mylist", f"docker://{registry.host}/bale/mlist:2",
         env=registry.env)
    raw = _skopeo_raw(f"docker://{registry.host}/bale/mlist:2", "--tls-verify=false")
    assert sorted(m["platform"]["architecture"] for m in raw["manifests"]) == sorted([HOST.split("/")[1], "s390x"])
    # v2s2: a Docker manifest list of Docker manifests
    bale("manifest", "push", "--format", "v2s2", "--tls-verify=false", "mylist",
         f"docker://{registry.host}/bale/mlist:docker", env=registry.env)
    raw = _skopeo_raw(f"docker://{registry.host}/bale/mlist:docker", "--tls-verify=false")
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert {m["mediaType"] for m in raw["manifests"]} == {"application/vnd.docker.distribution.manifest.v2+json"}
    # the list keeps its images through rmi and prune; remove drops one instance
    bale("rmi", "img-s390x")
    bale("prune")
    out2 = tmp_path / "layout2"
    bale("manifest", "push", "mylist", f"oci:{out2}:v1")
    assert len(_skopeo_raw(f"oci:{out2}:v1")["manifests"]) == 2
    subprocess.run(["skopeo", "copy", "--all", f"oci:{out2}:v1", f"oci:{tmp_path / 'copy'}:x"], check=True,
                   capture_output=True)  # every blob is there
    bale("manifest", "remove", "mylist", idx["manifests"][0]["digest"])
    assert len(json.loads(bale("manifest", "inspect", "mylist").stdout)["manifests"]) == 1
    bale("manifest", "rm", "mylist")
    assert bale("manifest", "inspect", "mylist", check=False).returncode != 0


def test_all_platforms_builds_what_every_base_has(bale, registry, multi_base, tmp_path):
    ctx = _ctx(tmp_path, f"FROM {multi_base} AS b\nCOPY f /f\nFROM b\nLABEL x=y\n")
    out = tmp_path / "layout"
    bale("bud", "--tls-verify=false", "--all-platforms", "-t", "allp", "--output", f"type=oci,dest={out}",
         str(ctx), env=registry.env)
    raw = _skopeo_raw(f"oci:{out}:latest")
    assert sorted(m["platform"]["architecture"] for m in raw["manifests"]) == \
        sorted([HOST.split("/")[1], "s390x"])
    assert json.loads(bale("manifest", "inspect", "allp").stdout)["manifests"] == raw["manifests"]
    bale("rmi", "allp")  # rmi takes a manifest list as buildah's does
    assert bale("manifest", "exists", "allp", check=False).returncode == 1
