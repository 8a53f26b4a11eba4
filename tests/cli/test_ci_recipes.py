"""CI recipes run as written (issue 11 item 8): the shell lines of each file in examples/ci/
are extracted and run with ``bale`` on PATH against the local test registry; and the
command lines of three buildah CI integrations, with ``buildah`` replaced by ``bale``:

- tektoncd/catalog task/buildah/0.6/buildah.yaml, step build-and-push (the bud and push lines)
- redhat-actions/buildah-build src/buildah.ts (buildUsingDocker, inspect, inspectArch,
  manifestRm/Create/Add, tag) and redhat-actions/push-to-registry's push with --digestfile
- a GitLab buildah job (STORAGE_DRIVER=vfs, BUILDAH_FORMAT=docker, BUILDAH_ISOLATION=chroot;
  login --password-stdin, build -t, push), as in GitLab buildah recipes

Only deployment values (registry host, credentials, image names) are set by the test; the
command lines are the files' own."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from builder.image.oci import Platform
from tests.fixtures.images import REPO, push_busybox

CI = REPO / "examples" / "ci"


# --- extracting shell lines from YAML without a YAML library -------------------------------
def block_scalars(text: str) -> list[str]:
    """The contents of every ``run: |``, ``script: |`` and ``- |`` block scalar, dedented."""
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(?:-\s+)?(?:(?:run|script|args):\s*)?[|>]-?\s*$", lines[i])
        if m and re.search(r"(run|script):\s*[|>]|^\s*-\s+[|>]", lines[i]):
            indent = len(m.group(1))
            body = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i])
                i += 1
            width = min(len(l) - len(l.lstrip()) for l in body if l.strip())
            out.append("\n".join(l[width:] for l in body).strip() + "\n")
            continue
        i += 1
    return out


def script_lists(text: str, keys: tuple[str, ...] = ("before_script", "script")) -> list[str]:
    """GitLab's ``script:`` lists: each ``- command`` item, in the order of ``keys``."""
    found: dict[str, list[str]] = {}
    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(\w+):\s*$", line)
        if m and m.group(2) in keys:
            items = []
            for nxt in lines[i + 1:]:
                item = re.match(r"^\s+-\s+(.*)$", nxt)
                if not item:
                    break
                items.append(item.group(1))
            found[m.group(2)] = items
    return [cmd for k in keys for cmd in found.get(k, [])]


def yaml_map(text: str, key: str) -> dict[str, str]:
    """A flat ``key:`` mapping of plain scalars (GitHub ``env:``, GitLab ``variables:``)."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)" + key + r":\s*$", line)
        if not m:
            continue
        for nxt in lines[i + 1:]:
            kv = re.match(r"^\s+([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$", nxt)
            if not kv or len(nxt) - len(nxt.lstrip()) <= len(m.group(1)):
                break
            out[kv.group(1)] = kv.group(2).strip().strip('"')
        break
    return out


# --- running -------------------------------------------------------------------------------
@pytest.fixture
def shell_env(tmp_path: Path, registry) -> dict[str, str]:
    """PATH with a ``bale`` that is this checkout, a fresh store and auth file, and the test
    registry marked insecure (registries.conf)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bale").write_text(f"#!/bin/sh\nexec {sys.executable} -m builder.cli.main \"$@\"\n")
    (bindir / "bale").chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", PYTHONPATH=str(REPO),
               BALE_ROOT=str(tmp_path / "store"), REGISTRY_AUTH_FILE=str(tmp_path / "auth.json"),
               BALE_RETRY_BASE_DELAY="0.05", **registry.env)
    for k in ("BUILDAH_LAYERS", "BUILDAH_FORMAT", "BUILDAH_ISOLATION", "STORAGE_DRIVER"):
        env.pop(k, None)
    return env


@pytest.fixture
def source(tmp_path: Path, registry, busybox_layout: Path) -> Path:
    """A checkout: a Dockerfile over busybox from the test registry, with a RUN and a COPY."""
    base = push_busybox(registry, busybox_layout, "bale/ci-base")
    src = tmp_path / "src"
    src.mkdir()
    (src / "Dockerfile").write_text(f"FROM {base}\nCOPY app.txt /app.txt\nRUN echo built > /built\n")
    (src / "app.txt").write_text("app\n")
    return src


def sh(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "-ec", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{script}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


def remote_config(ref: str) -> dict:
    out = subprocess.run(["skopeo", "inspect", "--config", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_github_actions_recipe(registry, shell_env, source):
    text = (CI / "github-actions.yml").read_text()
    env = dict(shell_env, **yaml_map(text, "env"))
    image = f"{registry.host}/bale/ci-gh:latest"
    env.update(REGISTRY=registry.host, IMAGE=image, REGISTRY_USER="ci", REGISTRY_PASSWORD="token",
               GITHUB_SHA="0123abc", GITHUB_OUTPUT=str(source / "out.txt"))
    scripts = block_scalars(text)
    assert len(scripts) == 3 and all("bale" in s for s in scripts)
    for s in scripts:
        r = sh(s, env, source)
    assert (source / "out.txt").read_text().startswith("digest=sha256:")
    cfg = remote_config(image)
    assert cfg["config"]["Labels"]["org.opencontainers.image.revision"] == "0123abc"


def test_gitlab_ci_recipe(registry, shell_env, source):
    text = (CI / "gitlab-ci.yml").read_text()
    ci = {"CI_REGISTRY": registry.host, "CI_REGISTRY_IMAGE": f"{registry.host}/bale/ci-gl",
          "CI_COMMIT_REF_SLUG": "main", "CI_REGISTRY_USER": "gitlab-ci-token", "CI_REGISTRY_PASSWORD": "pw"}
    variables = {k: re.sub(r"\$(\w+)", lambda m: ci.get(m.group(1), m.group(0)), v)
                 for k, v in yaml_map(text, "variables").items()}  # GitLab expands variables itself
    env = dict(shell_env, **ci, **variables)
    commands = script_lists(text)
    assert commands[0].startswith("echo") and any(c.startswith("bale push") for c in commands)
    for c in commands:
        r = sh(c, env, source)
    assert r.stdout.startswith(f"{registry.host}/bale/ci-gl:main sha256:")
    man = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{registry.host}/bale/ci-gl:main"], check=True, capture_output=True, text=True)
    assert json.loads(man.stdout)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"


def tekton_script(text: str, params: dict[str, str], workspaces: dict[str, str], results: Path) -> str:
    """The step's script with Tekton's substitutions: $(params.X) (given, else the default),
    $(workspaces.X.path|bound), $(results.X.path)."""
    defaults = dict(re.findall(r"- name: (\w+)\n(?:\s+description:.*\n)?\s+default: \"?([^\"\n]*)\"?", text))
    values = {**defaults, **params}
    script = block_scalars(text)[0]

    def sub(m: re.Match[str]) -> str:
        kind, name, attr = m.group(1), m.group(2), m.group(3)
        if kind == "params":
            return values[name]
        if kind == "workspaces":
            return ("true" if name in workspaces else "false") if attr == "bound" else workspaces.get(name, "")
        return str(results / name)
    return re.sub(r"\$\((params|workspaces|results)\.([\w-]+)(?:\.(\w+))?\)", sub, script)


def test_tekton_task_recipe(registry, shell_env, source, tmp_path):
    text = (CI / "tekton-task.yaml").read_text()
    results = tmp_path / "results"
    results.mkdir()
    image = f"{registry.host}/bale/ci-tekton:1"
    script = tekton_script(text, {"IMAGE": image, "TLSVERIFY": "false"}, {"source": str(source)}, results)
    sh(script, shell_env, source)
    digest = (results / "IMAGE_DIGEST").read_text()
    assert digest.startswith("sha256:") and (results / "IMAGE_URL").read_text() == image
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{image}"], check=True,
                         capture_output=True).stdout
    import hashlib
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest


def test_kubernetes_job_recipe(registry, shell_env, source):
    text = (CI / "kubernetes-job.yaml").read_text()
    env = dict(shell_env)
    env.update(dict(re.findall(r"- name: (\w+)\n\s+value: (.*)", text)))
    image = f"{registry.host}/bale/ci-job:1.0"
    env.update(IMAGE=image, PLATFORMS=str(Platform.host()), REGISTRY_AUTH_FILE=shell_env["REGISTRY_AUTH_FILE"])
    (script,) = block_scalars(text)
    sh(script, env, source)
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{image}"],
                                    check=True, capture_output=True, text=True).stdout)
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == [Platform.host().architecture]


# --- the buildah integrations, replayed -----------------------------------------------------
def test_replay_buildah_ci_integrations_with_bale(registry, shell_env, source, tmp_path):
    host = registry.host
    arch = Platform.host().architecture
    # tektoncd/catalog task/buildah/0.6 build-and-push (params: STORAGE_DRIVER=vfs, FORMAT=oci,
    # TLSVERIFY=false, BUILD_EXTRA_ARGS/PUSH_EXTRA_ARGS empty, workspaces unbound)
    tekton = f"""
bale "--storage-driver=vfs" bud \\
  "--format=oci" "--tls-verify=false" --no-cache \\
  -f "./Dockerfile" -t "{host}/bale/replay-tekton" "."
bale "--storage-driver=vfs" push \\
  "--tls-verify=false" --digestfile {tmp_path}/image-digest "{host}/bale/replay-tekton" \\
  "docker://{host}/bale/replay-tekton"
"""
    sh(tekton, shell_env, source)
    assert (tmp_path / "image-digest").read_text().startswith("sha256:")
    # redhat-actions/buildah-build src/buildah.ts (inputs: layers=false, oci=true, tls-verify=false,
    # two archs -> manifest) then redhat-actions/push-to-registry
    rh = f"""
bale bud --arch {arch} -f ./Dockerfile --label a=b --annotation c=d --build-arg X=1 --format oci \\
  --tls-verify=false --layers=false -t replay-rh-{arch} .
bale images --format '{{{{.Digest}}}}' replay-rh-{arch}
bale inspect --type image --format '{{{{.OCIv1.architecture}}}}' replay-rh-{arch}
bale manifest rm replay-rh || true
bale manifest create replay-rh
bale manifest add replay-rh replay-rh-{arch}
bale tag replay-rh-{arch} replay-rh-{arch}:v1 replay-rh-{arch}:latest
bale manifest push --all --tls-verify=false --digestfile {tmp_path}/rh-digest replay-rh docker://{host}/bale/replay-rh:v1
bale push --quiet --tls-verify=false --digestfile {tmp_path}/rh-img-digest replay-rh-{arch}:v1 docker://{host}/bale/replay-rh-img:v1
"""
    r = sh(rh, shell_env, source)
    out = r.stdout.split()  # the image id bud prints, then {{.Digest}} and {{.OCIv1.architecture}}
    assert len(out[0]) == 64 and out[1].startswith("sha256:") and out[2] == arch
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                     f"docker://{host}/bale/replay-rh:v1"], check=True, capture_output=True,
                                    text=True).stdout)
    assert raw["manifests"][0]["platform"]["architecture"] == arch
    assert remote_config(f"{host}/bale/replay-rh-img:v1")["config"]["Labels"]["a"] == "b"
    # a GitLab buildah job (variables STORAGE_DRIVER=vfs BUILDAH_FORMAT=docker BUILDAH_ISOLATION=chroot)
    gitlab = f"""
echo "$CI_REGISTRY_PASSWORD" | bale login -u "$CI_REGISTRY_USER" --password-stdin {host}
bale build -t {host}/bale/replay-gitlab:latest .
bale push {host}/bale/replay-gitlab:latest
"""
    env = dict(shell_env, STORAGE_DRIVER="vfs", BUILDAH_FORMAT="docker", BUILDAH_ISOLATION="chroot",
               CI_REGISTRY_USER="u", CI_REGISTRY_PASSWORD="p")
    sh(gitlab, env, source)
    assert remote_config(f"{host}/bale/replay-gitlab:latest")["architecture"] == arch
