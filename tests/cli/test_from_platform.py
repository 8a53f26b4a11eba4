"""FROM --platform picks the base image's platform out of a manifest list.

BuildKit (moby/buildkit 73ed682, frontend/dockerfile/dockerfile2llb/convert.go):
- 428-457: a stage's ``--platform`` is expanded with the global args (BUILDPLATFORM,
  TARGETPLATFORM, ...) and parsed (``ds.platform = &p``);
- 633-636 ``platform := d.platform`` (else the target platform: this machine's when the build
  names none), 696-700 ``ResolveImageConfig(... Platform: platform ...)`` and 745-747
  ``llb.Image(..., llb.Platform(*platform))``: that platform's entry of a list is the stage's
  base, its config the stage's image config;
- 922-936 (finalizeResultImage): with an explicit build --platform the result's
  os/architecture/variant are the target's; without one they are the final stage's base's.
- 957-970: ``COPY --from=IMAGE`` (no stage) is a stage without ``--platform``: the target's.

The base is a two-platform OCI index made here (busybox-static + a marker layer ``/plat``
holding the instance's architecture), pushed to the test registry with ``skopeo copy --all``.
The results are read independently: ``skopeo inspect --config`` for the config, python
tarfile over the layer blobs of an OCI layout for the files."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.image.oci import Platform

HOST = Platform.host()
FOREIGN_ARCH = "amd64" if HOST.architecture == "arm64" else "arm64"
FOREIGN = f"linux/{FOREIGN_ARCH}"


def _blob(layout: Path, data: bytes) -> dict:
    d = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / d).write_bytes(data)
    return {"digest": "sha256:" + d, "size": len(data)}


def _marker_layer(arch: str) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        data = (arch + "\n").encode()
        ti = tarfile.TarInfo("plat")
        ti.size, ti.mode = len(data), 0o644
        tf.addfile(ti, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0), "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()


@pytest.fixture(scope="module")
def plat_base(registry, busybox_layout: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``REGISTRY/bale/plat-base:latest``: an index of the host's and FOREIGN's instance."""
    path = tmp_path_factory.mktemp("platbase") / "layout"
    shutil.copytree(busybox_layout, path)
    blobs = path / "blobs" / "sha256"
    desc = json.loads((path / "index.json").read_text())["manifests"][0]
    man = json.loads((blobs / desc["digest"][7:]).read_text())
    cfg = json.loads((blobs / man["config"]["digest"][7:]).read_text())
    entries = []
    for arch in (HOST.architecture, FOREIGN_ARCH):
        layer, diff_id = _marker_layer(arch)
        c = dict(cfg, architecture=arch, os="linux", rootfs={"type": "layers",
                                                              "diff_ids": cfg["rootfs"]["diff_ids"] + [diff_id]})
        c.pop("variant", None)
        cd = _blob(path, json.dumps(c).encode())
        m = dict(man, config={**man["config"], **cd},
                 layers=man["layers"] + [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                          **_blob(path, layer)}])
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                        **_blob(path, json.dumps(m).encode()), "platform": {"os": "linux", "architecture": arch}})
    idx = _blob(path, json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                  "manifests": entries}).encode())
    (path / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", **idx,
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    ref = f"{registry.host}/bale/plat-base:latest"
    subprocess.run(["skopeo", "copy", "--all", "--quiet", "--dest-tls-verify=false", f"oci:{path}:latest",
                    f"docker://{ref}"], check=True, capture_output=True)
    return ref


def _read(bale, image: str, tmp_path: Path) -> tuple[dict, dict[str, str]]:
    """The image's config (skopeo) and its files' text, top layer wins (python tarfile)."""
    out = tmp_path / f"layout-{hashlib.sha256(image.encode()).hexdigest()[:8]}"
    bale("push", image, f"oci:{out}:x")
    cfg = json.loads(subprocess.run(["skopeo", "inspect", "--config", "--raw", f"oci:{out}:x"], check=True,
                                    capture_output=True, text=True).stdout)
    man = json.loads(subprocess.run(["skopeo", "inspect", "--raw", f"oci:{out}:x"], check=True,
                                    capture_output=True, text=True).stdout)
    files: dict[str, str] = {}
    for layer in man["layers"]:
        with tarfile.open(out / "blobs" / "sha256" / layer["digest"][7:]) as tf:
            for m in tf.getmembers():
                if m.isfile() and m.size < 4096:
                    f = tf.extractfile(m)
                    assert f is not None
                    files[m.name.lstrip("./")] = f.read().decode(errors="replace")
    return cfg, files


def _ctx(tmp_path: Path, text: str, name: str = "ctx") -> Path:
    ctx = tmp_path / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(text)
    (ctx / "f").write_text("payload\n")
    return ctx


def test_from_platform_picks_the_list_entry_and_the_image_carries_it(bale, registry, plat_base, tmp_path):
    # and a host stage copies from the foreign stage (no RUN there: nothing to emulate)
    ctx = _ctx(tmp_path, f"FROM --platform={FOREIGN} {plat_base} AS foreign\nLABEL l=1\n"
                         f"FROM {plat_base} AS host\nCOPY --from=foreign /plat /foreign-plat\n"
                         f"FROM --platform={FOREIGN} {plat_base}\nCOPY f /f\n")
    bale("bud", "--tls-verify=false", "-t", "fp-final", str(ctx), env=registry.env)
    cfg, files = _read(bale, "fp-final", tmp_path)
    assert cfg["architecture"] == FOREIGN_ARCH and cfg["os"] == "linux"
    assert files["plat"] == FOREIGN_ARCH + "\n" and files["f"] == "payload\n"
    bale("bud", "--tls-verify=false", "--target", "host", "-t", "fp-host", str(ctx), env=registry.env)
    cfg, files = _read(bale, "fp-host", tmp_path)
    assert cfg["architecture"] == HOST.architecture
    assert files["plat"] == HOST.architecture + "\n" and files["foreign-plat"] == FOREIGN_ARCH + "\n"


def test_explicit_build_platform_names_the_result_whatever_from_platform_took(bale, registry, plat_base, tmp_path):
    # convert.go 922-936: !implicitTarget sets the target's OS/Architecture on the result
    ctx = _ctx(tmp_path, f"FROM --platform={FOREIGN} {plat_base}\nCOPY f /f\n")
    bale("bud", "--tls-verify=false", "--platform", str(HOST), "-t", "fp-explicit", str(ctx), env=registry.env)
    cfg, files = _read(bale, "fp-explicit", tmp_path)
    assert cfg["architecture"] == HOST.architecture
    assert files["plat"] == FOREIGN_ARCH + "\n"  # the layers are the FROM --platform entry's


def test_cross_compile_pattern_build_stage_on_buildplatform_final_on_target(bale, registry, plat_base, tmp_path):
    ctx = _ctx(tmp_path, f"FROM --platform=$BUILDPLATFORM {plat_base} AS build\nARG TARGETARCH\n"
                         "RUN cat /plat > /built-on && echo $TARGETARCH > /built-for\n"
                         f"FROM {plat_base}\nCOPY --from=build /built-on /built-for /out/\n")
    bale("bud", "--tls-verify=false", "--layers", "--platform", FOREIGN, "-t", "fp-cross", str(ctx),
         env=registry.env)
    cfg, files = _read(bale, "fp-cross", tmp_path)
    assert cfg["architecture"] == FOREIGN_ARCH
    assert files["plat"] == FOREIGN_ARCH + "\n"
    assert files["out/built-on"] == HOST.architecture + "\n"  # the RUN ran on the build platform's base
    assert files["out/built-for"] == FOREIGN_ARCH + "\n"


def test_layers_cache_keys_on_the_platform_chosen(bale, registry, plat_base, tmp_path):
    host_ctx = _ctx(tmp_path, f"ARG P\nFROM --platform=$P {plat_base}\nCOPY f /f\nRUN true\n")
    # no RUN on the foreign base (no emulator needed): COPY only
    foreign_ctx = _ctx(tmp_path, f"ARG P\nFROM --platform=$P {plat_base}\nCOPY f /f\n", name="ctx-foreign")
    hits = {}
    for n, p in enumerate((str(HOST), FOREIGN, str(HOST))):
        ctx = foreign_ctx if p == FOREIGN else host_ctx
        r = bale("bud", "--tls-verify=false", "--layers", "--build-arg", f"P={p}", "-t", f"fp-l{n}", str(ctx),
                 env=registry.env)
        cfg, files = _read(bale, f"fp-l{n}", tmp_path)
        assert cfg["architecture"] == p.split("/")[1], p
        assert files["plat"] == p.split("/")[1] + "\n"  # no stale base from the other platform's build
        hits[n] = r.stderr.count("--> Using cache")
    # the foreign COPY is not the host's cached one (its parent chain is the arm64 base's);
    # the host build again hits both steps
    assert hits == {0: 0, 1: 0, 2: 2}


def test_pull_and_from_platform_take_the_entry(bale, registry, plat_base):
    bale("pull", "--tls-verify=false", "--platform", FOREIGN, plat_base, env=registry.env)
    cfg = json.loads(bale("inspect", "--type", "image", plat_base).stdout)
    text = json.dumps(cfg)
    assert f'"architecture": "{FOREIGN_ARCH}"' in text or f'"Architecture": "{FOREIGN_ARCH}"' in text
    name = bale("from", "--tls-verify=false", "--platform", str(HOST), plat_base, env=registry.env).stdout.strip()
    out = bale("run", name, "--", "cat", "/plat").stdout
    assert out == HOST.architecture + "\n"
