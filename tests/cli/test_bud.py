"""`bale bud` features beyond the corpus: caching, reproducibility, outputs,
push, contexts, squash — as the unprivileged user."""
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

from tests.helpers.oci_reader import flatten, read_layout

pytestmark = [pytest.mark.slow]

DOCKERFILE = """FROM busybox
COPY a.txt /a.txt
RUN cat /a.txt > /copy-a && date +%s%N > /stamp-1
COPY b.txt /b.txt
RUN date +%s%N > /stamp-2
"""


@pytest.fixture
def env(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    ctx = user_tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("a1\n")
    (ctx / "b.txt").write_text("b1\n")
    for p in [ctx, *ctx.rglob("*")]:
        os.lchown(p, u.uid, u.gid)

    def bale(*args, **kw):
        return u.bale(*args, root=root, **kw)
    return u, bale, ctx, user_tmp


def _layers(bale, name):
    return json.loads(bale("inspect", name).stdout)["Layers"]


def test_layers_cache_reuses_and_reruns_only_after_a_change(env):
    u, bale, ctx, tmp = env
    first = bale("bud", "--layers", "-t", "c1", str(ctx))
    l1 = _layers(bale, "c1")
    again = bale("bud", "--layers", "-t", "c2", str(ctx))
    assert _layers(bale, "c2") == l1  # nothing changed: no new layer
    assert again.stderr.count("Using cache") == 4 and "Using cache" not in first.stderr
    (ctx / "b.txt").write_text("b2\n")
    os.lchown(ctx / "b.txt", u.uid, u.gid)
    third = bale("bud", "--layers", "-t", "c3", str(ctx))
    l3 = _layers(bale, "c3")
    assert l3[:3] == l1[:3] and l3[3:] != l1[3:]  # steps before the changed file come from the cache
    assert third.stderr.count("Using cache") == 2
    nocache = bale("bud", "--layers", "--no-cache", "-t", "c4", str(ctx))
    assert "Using cache" not in nocache.stderr and _layers(bale, "c4")[1:] != l3[1:]


def test_source_date_epoch_reproducible(env):
    u, bale, ctx, tmp = env
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY a.txt /a\nRUN echo built > /built && mkdir -p /d/e\n"
                                    "ENV X=1\nLABEL l=v\n")
    digests = []
    for n in range(2):
        bale("bud", "--timestamp", "1700000000", "--digestfile", f"{tmp}/digest{n}", "-t", f"r{n}", str(ctx))
        digests.append((tmp / f"digest{n}").read_text())
    assert digests[0] == digests[1]
    u.bale("bud", "-t", "r-env", str(ctx), root=tmp / "store", env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert json.loads(bale("inspect", "r-env").stdout)["Digest"] == digests[0]
    cfg = json.loads(bale("inspect", "r0").stdout)["Config"]
    assert cfg["created"] == "2023-11-14T22:13:20Z"


def test_outputs_iidfile_squash_and_quiet(env):
    u, bale, ctx, tmp = env
    out = tmp / "out"
    r = bale("bud", "-q", "--squash", "--iidfile", f"{tmp}/iid", "--output", f"type=oci,dest={out}",
             "--output", f"type=docker-archive,dest={tmp}/img.tar", "--output", f"type=local,dest={tmp}/rootfs",
             "-t", "sq", str(ctx))
    assert r.stdout.strip() == (tmp / "iid").read_text().split(":")[1] and r.stderr == ""
    manifest, config, layers = read_layout(out, "latest")
    assert len(layers) == 2  # the base's layer, and everything this build added as one
    assert len(config["history"]) == 2
    fs = flatten(layers)
    assert fs["/copy-a"].content == b"a1\n" and "/bin/busybox" in fs
    assert (tmp / "rootfs" / "copy-a").read_text() == "a1\n"
    with tarfile.open(tmp / "img.tar") as t:
        assert "manifest.json" in t.getnames()


def test_dockerfile_on_stdin_and_tar_context(env):
    u, bale, ctx, tmp = env
    r = bale("bud", "-f", "-", "-t", "stdin", str(ctx), input="FROM busybox\nCOPY a.txt /from-stdin\n")
    assert r.returncode == 0
    tarball = tmp / "ctx.tar.gz"
    with tarfile.open(tarball, "w:gz") as t:
        t.add(ctx, arcname=".")
    os.lchown(tarball, u.uid, u.gid)
    bale("bud", "-t", "tarctx", str(tarball))
    assert len(_layers(bale, "tarctx")) == 5


@pytest.mark.skipif(not shutil.which("git"), reason="git not installed: cannot test git contexts")
def test_git_context(env):
    u, bale, ctx, tmp = env
    repo = tmp / "repo"
    u.run(["sh", "-c", f"cp -r {ctx} {repo} && cd {repo} && git init -q && git add . && "
                       "git -c user.name=t -c user.email=t@t commit -qm init"])
    bale("bud", "-t", "fromgit", f"file://{repo}/.git")
    assert len(_layers(bale, "fromgit")) == 5


def test_push_to_registry_read_by_skopeo(env, registry):
    u, bale, ctx, tmp = env
    if not shutil.which("skopeo"):
        pytest.skip("skopeo not installed: no independent reader for the pushed image")
    ref = f"{registry.host}/bale/bud:1"
    bale("bud", "--tls-verify=false", "--digestfile", f"{tmp}/d", "-t", f"docker://{ref}", str(ctx))
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         check=True, capture_output=True).stdout
    assert "sha256:" + hashlib.sha256(out).hexdigest() == (tmp / "d").read_text()
    assert json.loads(bale("images", "--format", "json").stdout)[0]["names"] == ["localhost/busybox:latest"]
    bale("bud", "--tls-verify=false", "--push", "-t", f"{registry.host}/bale/bud:2", str(ctx))
    subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/bale/bud:2"], check=True,
                   capture_output=True)


def test_multistage_runs_under_podman(env, tmp_path):
    if not shutil.which("podman"):
        pytest.skip("podman not installed: cannot run the multi-stage result")
    u, bale, ctx, tmp = env
    (ctx / "Dockerfile").write_text("FROM busybox AS build\nRUN echo compiled > /artifact && chmod 0750 /artifact\n"
                                    "FROM busybox\nCOPY --from=build --chown=1000:1000 /artifact /app/artifact\n"
                                    "USER app\nCMD [\"cat\", \"/app/artifact\"]\n")
    bale("bud", "-t", "multi", str(ctx))
    bale("push", "multi", f"docker-archive:{tmp}/multi.tar:localhost/multi:latest")
    runroot = tempfile.mkdtemp(prefix="pr-", dir="/tmp")
    podman = ["podman", "--root", str(tmp_path / "pr"), "--runroot", runroot, "--storage-driver", "vfs"]
    subprocess.run(podman + ["load", "-i", f"{tmp}/multi.tar"], check=True, capture_output=True)
    r = subprocess.run(podman + ["run", "--rm", "--network", "host", "--ulimit", "nofile=1024:1024", "--ulimit",
                                 "nproc=4096:4096", "localhost/multi:latest"], capture_output=True, text=True)
    shutil.rmtree(runroot, ignore_errors=True)
    assert r.returncode == 0 and r.stdout == "compiled\n", r.stderr


def test_zstd_layers_and_docker_conversion(env, registry):
    u, bale, ctx, tmp = env
    bale("bud", "--compression", "zstd", "-t", "z", str(ctx))
    bale("push", "z", f"oci:{tmp}/z:1")
    manifest, config, layers = read_layout(tmp / "z", "1")
    assert manifest["layers"][-1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert flatten(layers)["/copy-a"].content == b"a1\n"
    if shutil.which("skopeo"):
        subprocess.run(["skopeo", "inspect", f"oci:{tmp}/z:1"], check=True, capture_output=True)
    # docker schema2 cannot carry zstd: pushing as docker recompresses to gzip
    bale("push", "--tls-verify=false", "--format", "docker", "z", f"docker://{registry.host}/bale/z:1")
    man = json.loads(bale("inspect", "--type", "manifest", "--tls-verify=false",
                          f"docker://{registry.host}/bale/z:1").stdout)
    assert {l["mediaType"] for l in man["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    r = bale("bud", "--format", "docker", "--compression", "zstd", "-t", "zd", str(ctx), check=False)
    assert r.returncode == 2 and "zstd" in r.stderr


def test_pull_policies(env, registry, busybox_layout):
    from tests.fixtures.images import push_busybox
    u, bale, ctx, tmp = env
    ref = push_busybox(registry, busybox_layout, "bale/base:1")
    (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN echo ok > /ok\n")
    r = bale("bud", "--pull=never", "-t", "p0", str(ctx), check=False)
    assert r.returncode == 1 and ref in r.stderr and "--pull=never" in r.stderr
    bale("bud", "--pull=missing", "--tls-verify=false", "-t", "p1", str(ctx))
    names = {n for i in json.loads(bale("images", "--format", "json").stdout) for n in i["names"]}
    assert ref in names
    bale("bud", "--pull=never", "-t", "p2", str(ctx))  # now present locally
    bale("bud", "--pull=always", "--tls-verify=false", "-t", "p3", str(ctx))
