"""Issue 8, classes 7 and 8, built for real as the unprivileged user and read back
with the stdlib tar reader (tests/helpers/oci_reader), not bale's own."""
from __future__ import annotations

import json
import os

import pytest

from tests.helpers.oci_reader import flatten, read_layout

pytestmark = [pytest.mark.slow]


@pytest.fixture
def build(unprivileged_user, user_tmp, busybox_layout):
    u = unprivileged_user
    root = u.busybox_store(user_tmp, busybox_layout)

    def run(dockerfile: str, name: str, *extra: str):
        ctx = user_tmp / f"ctx-{name}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(dockerfile)
        for p in [ctx, *ctx.rglob("*")]:
            os.lchown(p, u.uid, u.gid)
        r = u.bale("bud", *extra, "-t", name, str(ctx), root=root)
        u.bale("push", name, f"oci:{user_tmp}/{name}-out:latest", root=root)
        _, config, layers = read_layout(user_tmp / f"{name}-out", "latest")
        return r, config, flatten(layers)
    return run


def test_onbuild_triggers_of_a_stage_run_in_the_child(build):
    """BuildKit dockerfile2llb/convert.go: resolveStages appends the base stage's OnbuildCommands
    to the child's triggers, and dispatchState.init sets image.Config.OnBuild = nil, so the
    child image lists only its own ONBUILD."""
    _, config, fs = build("FROM busybox AS parent\nONBUILD RUN echo triggered > /trig\nONBUILD ENV T=1\n"
                          "RUN echo parent > /parent\n"
                          "FROM parent AS child\nONBUILD RUN echo later\nRUN echo $T > /t\n", "onbuild")
    assert fs["/trig"].content == b"triggered\n" and fs["/parent"].content == b"parent\n"
    assert fs["/t"].content == b"1\n"
    assert config["config"]["OnBuild"] == ["RUN echo later"]
    assert "T=1" in config["config"]["Env"]


def test_duplicate_stage_names_warn_and_build(build):
    """BuildKit validations.go validateStageNames: DuplicateStageName is a lint warning; the
    name then means the last stage of that name (convert.go dispatchStates.addState)."""
    r, _, fs = build("FROM busybox AS dup\nRUN echo first > /which\n"
                     "FROM busybox AS dup\nRUN echo second > /which\n"
                     "FROM busybox\nCOPY --from=dup /which /which\n", "dup")
    assert "DuplicateStageName" in r.stderr and "Dockerfile:3" in r.stderr
    assert fs["/which"].content == b"second\n"
