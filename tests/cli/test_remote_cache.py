"""The remote layer cache (issue 11 item 3): ``bud --layers --cache-to REPO`` pushes each
cached step's layer to a registry repository tagged with the step's cache key (the key the
local cache uses, builder.build.cache.step_key), and ``--cache-from REPO`` looks steps up
there: two stores that share only a registry share work. The second build runs no RUN
(its per-step log says "Using cache" for every step, and the RUN's output, which differs on
every run, is the first build's)."""
from __future__ import annotations

import json
import re
import subprocess

from tests.fixtures.images import push_busybox


def _step_log(stderr: str) -> list[tuple[str, bool]]:
    steps: list[list] = []
    for line in stderr.splitlines():
        m = re.match(r"\[[^]]*\] STEP \d+/\d+: (.*)", line)
        if m and not m.group(1).startswith("FROM "):
            steps.append([m.group(1), None])
        elif line.startswith("--> ") and steps and steps[-1][1] is None:
            steps[-1][1] = line == "--> Using cache"
    return [(t, hit) for t, hit in steps if hit is not None]  # filesystem steps (config steps log no -->)


def test_two_stores_share_steps_through_the_registry(bale, registry, busybox_layout, tmp_path):
    base = push_busybox(registry, busybox_layout, "bale/rc-base")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("context file\n")
    (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY f /f\nRUN cat /proc/sys/kernel/random/uuid > /run-id\n"
                                    "ENV X=1\nRUN touch /empty-change-free || true\n")
    cache = f"{registry.host}/bale/rc-cache"
    a = bale("bud", "--layers", "--tls-verify=false", "--cache-to", cache, "-t", "a", str(ctx),
             root=tmp_path / "store-a", env=registry.env)
    assert [hit for _, hit in _step_log(a.stderr)] == [False, False, False]
    tags = json.loads(subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{cache}"],
                                     check=True, capture_output=True, text=True).stdout)["Tags"]
    assert len(tags) == 3 and all(re.fullmatch(r"[0-9a-f]{64}", t) for t in tags)  # COPY, RUN, RUN
    b = bale("bud", "--layers=true", "--tls-verify=false", "--cache-from", cache, "-t", "b", str(ctx),
             root=tmp_path / "store-b", env=registry.env)
    log = _step_log(b.stderr)
    assert [hit for _, hit in log] == [True, True, True], b.stderr  # no RUN ran
    la = json.loads(bale("inspect", "a", root=tmp_path / "store-a").stdout)["Layers"]
    lb = json.loads(bale("inspect", "b", root=tmp_path / "store-b").stdout)["Layers"]
    assert la == lb  # the RUN's uuid layer is the first build's
    # the image pushes from the second store: its layer blobs were pulled into it
    bale("push", "--tls-verify=false", "b", f"docker://{registry.host}/bale/rc-out:1", root=tmp_path / "store-b",
         env=registry.env)
    # a cache repository that is empty or down is a miss, never a failure
    c = bale("bud", "--layers", "--tls-verify=false", "--cache-from", f"{registry.host}/bale/rc-none",
             "--cache-from", "127.0.0.1:9/bale/down", "--retry", "0", "-t", "c", str(ctx),
             root=tmp_path / "store-c", env=registry.env)
    assert [hit for _, hit in _step_log(c.stderr)] == [False, False, False]


def test_run_cache_mounts_travel_with_mounts_true(bale, registry, busybox_layout, tmp_path):
    """``--cache-to REPO,mounts=true`` exports the store's RUN cache mounts (owners kept) and
    ``--cache-from REPO,mounts=true`` seeds an empty store with them before the build."""
    base = push_busybox(registry, busybox_layout, "bale/rcm-base")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nARG N\nRUN --mount=type=cache,target=/c,uid=123 ls -ln /c > /seen && "
        "echo $N > /c/from-$N && chown 123 /c/from-$N\n")
    repo = f"{registry.host}/bale/rcm-cache"
    bale("bud", "--layers", "--tls-verify=false", "--cache-to", f"{repo},mounts=true", "--build-arg", "N=a",
         "-t", "a", str(ctx), root=tmp_path / "sa", env=registry.env)
    tags = json.loads(subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{repo}"],
                                     check=True, capture_output=True, text=True).stdout)["Tags"]
    assert [t for t in tags if t.startswith("mount-")]
    out = tmp_path / "b.tar"
    bale("bud", "--layers", "--no-cache", "--tls-verify=false", "--cache-from", f"type=registry,ref={repo},mounts=true",
         "--build-arg", "N=b", "--output", f"type=tar,dest={out}", str(ctx), root=tmp_path / "sb", env=registry.env)
    import tarfile
    with tarfile.open(out) as tf:
        seen = tf.extractfile("seen").read().decode()
    assert "from-a" in seen and " 123 " in seen  # the first store's file, with the owner RUN gave it
