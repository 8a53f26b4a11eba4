"""Rebuilds with --layers re-run exactly the steps whose inputs changed (issue 7,
item 3), read from the per-step log, and a failing step names FILE:LINE:
INSTRUCTION (item 6). Built as the unprivileged test user; images read back
with the stdlib tar reader (tests/helpers/oci_reader), not bale's own."""
from __future__ import annotations

import json
import os
import re

import pytest

from tests.helpers.oci_reader import flatten, read_layout

pytestmark = [pytest.mark.slow]

TWO_STAGES = """FROM busybox AS builder
COPY venv/ /opt/venv/
RUN echo built > /opt/venv/stamp
COPY other.txt /other.txt
RUN cat /other.txt > /derived
FROM busybox
COPY --from=builder /opt/venv /opt/venv
RUN ls /opt/venv > /listing
"""


@pytest.fixture
def env(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)
    ctx = user_tmp / "ctx"
    (ctx / "venv" / "lib").mkdir(parents=True)
    for n in range(50):
        (ctx / "venv" / "lib" / f"m{n}.py").write_text(f"x = {n}\n")
    (ctx / "other.txt").write_text("one\n")

    def chown() -> None:
        for p in [ctx, *ctx.rglob("*")]:
            os.lchown(p, u.uid, u.gid)
    chown()

    def bale(*args, **kw):
        return u.bale(*args, root=root, **kw)
    return u, bale, ctx, user_tmp, chown


def step_log(stderr: str) -> list[tuple[str, bool]]:
    """(instruction text, was it a cache hit) for every filesystem step in a bud log."""
    steps: list[list] = []
    for line in stderr.splitlines():
        m = re.match(r"\[[^]]*\] STEP \d+/\d+: (.*)", line)
        if m:
            steps.append([m.group(1), None])
        elif line.startswith("--> ") and steps and steps[-1][1] is None:
            steps[-1][1] = line == "--> Using cache"
    return [(t, hit) for t, hit in steps if hit is not None]


def test_two_stage_rebuild_reruns_only_the_steps_whose_inputs_changed(env):
    u, bale, ctx, tmp, chown = env
    (ctx / "Dockerfile").write_text(TWO_STAGES)
    chown()
    first = bale("bud", "--layers", "-t", "two:1", str(ctx))
    assert not any(hit for _, hit in step_log(first.stderr))
    (ctx / "other.txt").write_text("two\n")  # read by the builder stage, not by what the final stage copies
    chown()
    second = bale("bud", "--layers", "-t", "two:2", str(ctx))
    log = step_log(second.stderr)
    assert [(t.split()[0] + (" --from" if "--from" in t else ""), hit) for t, hit in log] == [
        ("COPY", True), ("RUN", True),  # venv/ and the RUN over it: inputs unchanged
        ("COPY", False), ("RUN", False),  # other.txt changed, and the RUN after it sees a new parent
        ("COPY --from", True),  # the copied subtree /opt/venv is identical: BuildKit-style content key
        ("RUN", True),
    ], second.stderr
    one = json.loads(bale("inspect", "two:1").stdout)["Layers"]
    two = json.loads(bale("inspect", "two:2").stdout)["Layers"]
    assert one == two  # the final image did not change at all
    # a change inside the copied subtree does invalidate the COPY --from
    (ctx / "venv" / "lib" / "m7.py").write_text("x = 'changed'\n")
    chown()
    third = step_log(bale("bud", "--layers", "-t", "two:3", str(ctx)).stderr)
    assert [hit for _, hit in third] == [False] * 6  # the RUN over venv/ made a new layer: all below re-run
    bale("push", "two:3", f"oci:{tmp}/two3:latest")
    _, _, layers = read_layout(tmp / "two3", "latest")
    fs = flatten(layers)
    assert fs["/opt/venv/lib/m7.py"].content == b"x = 'changed'\n" and fs["/opt/venv/stamp"].content == b"built\n"


def test_a_build_arg_used_by_copy_chown_invalidates_the_copy(env):
    """The stale-cache bug of issue 7: the key was the raw instruction text."""
    u, bale, ctx, tmp, chown = env
    (ctx / "Dockerfile").write_text("FROM busybox\nARG OWNER=1000\nARG OTHER=a\nCOPY --chown=$OWNER other.txt /f\n")
    chown()
    bale("bud", "--layers", "-t", "own:1", str(ctx))
    same = bale("bud", "--layers", "--build-arg", "OTHER=b", "-t", "own:2", str(ctx))
    assert step_log(same.stderr) == [("COPY --chown=1000 other.txt /f", True)]
    changed = bale("bud", "--layers", "--build-arg", "OWNER=2000", "-t", "own:3", str(ctx))
    assert step_log(changed.stderr) == [("COPY --chown=2000 other.txt /f", False)]
    bale("push", "own:3", f"oci:{tmp}/own3:latest")
    _, _, layers = read_layout(tmp / "own3", "latest")
    f = flatten(layers)["/f"]
    assert f.info.uid == 2000  # (the gid a bare uid gets is issue 8, class 1)


@pytest.mark.parametrize("dockerfile,message,cause", [
    ("FROM busybox\n\nRUN exit 3\n", "Dockerfile:3: RUN: ", "exit 3: exited with status 3"),
    ("FROM busybox\nCOPY locked.txt /x\n", "Dockerfile:2: COPY: ", "permission denied"),
    ("FROM busybox\nCOPY missing.txt /x\n", "Dockerfile:2: COPY: ", "missing.txt"),
])
def test_a_failing_step_names_file_line_and_instruction(env, dockerfile, message, cause):
    u, bale, ctx, tmp, chown = env
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "locked.txt").write_text("secret\n")
    chown()
    os.chmod(ctx / "locked.txt", 0)
    r = bale("bud", "-t", "fails", str(ctx), check=False)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("bale: " + message) and cause in last.lower(), r.stderr
    assert "Traceback" not in r.stderr
