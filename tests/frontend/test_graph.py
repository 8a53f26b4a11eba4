"""Lowering: exact lines, heredocs, ARG scoping, stage pruning, and one-line errors naming FILE:LINE."""
import pytest

from frontend.errors import FrontendError
from frontend.graph import build_graph
from frontend.steps import (BaseInfo, ConfigStep, CopyFromStep, CopyStep, RunStep, SetCmd, SetEntrypoint, SetEnv,
                            Span, WorkdirStep)


def graph(text, **kw):
    kw.setdefault("resolve_base", lambda ref, plat: BaseInfo(env=["PATH=/bin"]))
    return build_graph(text, **kw)


def test_exact_lines_with_continuations_comments_and_heredocs():
    g = graph("# syntax=docker/dockerfile:1\n\nFROM busybox\nRUN a \\\n  # note\n  b\nRUN <<EOF\nx\nFROM y\nEOF\n"
              "COPY <<F /f\nbody\nF\nENV A=1\n")
    steps = g.stages[0].steps
    assert [(s.line, s.keyword) for s in steps] == [(4, "RUN"), (7, "RUN"), (11, "COPY"), (14, "ENV")]
    assert steps[0].args == ("/bin/sh", "-c", "a   b")
    assert steps[1].args == ("/bin/sh", "-c", "x\nFROM y\n")
    assert steps[2].inline[0].content == b"body\n"


@pytest.mark.parametrize("text,message", [
    ("FROM a\nFOO bar\n", "Dockerfile:2: FOO: unknown instruction"),
    ("FROM a\nCOPY --chwon=1 a b\n", "Dockerfile:2: COPY: unknown flag --chwon"),
    ("FROM a\nRUN --network=wifi true\n", "Dockerfile:2: RUN: invalid --network 'wifi'"),
    ("FROM a\n\nCOPY a\n", "Dockerfile:3: COPY: expected at least one source and a destination"),
    ("FROM a\nSHELL /bin/sh\n", "Dockerfile:2: SHELL: expected a JSON array"),
    ("RUN true\n", "Dockerfile:1: RUN: only ARG may come before the first FROM"),
    ("FROM a\nHEALTHCHECK --interval=5x CMD true\n", "Dockerfile:2: HEALTHCHECK: invalid duration '5x'"),
    ("FROM a\nEXPOSE http\n", "Dockerfile:2: EXPOSE: invalid port 'http'"),
    ("FROM a\nONBUILD FROM b\n", "Dockerfile:2: ONBUILD: FROM is not allowed as an ONBUILD trigger"),
    ("FROM a\nARG 1x\n", "Dockerfile:2: ARG: invalid argument name '1x'"),
    ("FROM a\nRUN <<EOF\nno end\n", "Dockerfile:2: RUN: unterminated heredoc <<EOF"),
    ("FROM a\nENV ${X:?needed}=1\n", "Dockerfile:2: ENV: X: needed"),
    ("FROM a\nCOPY --chmod=9z a b\n", "Dockerfile:2: COPY: invalid --chmod"),
])
def test_errors_name_file_and_line(text, message):
    with pytest.raises(FrontendError) as exc:
        graph(text, filename="Dockerfile")
    assert str(exc.value).startswith(message)
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)


def test_arg_scoping_and_predefined():
    g = graph("ARG V=global\nARG TARGETARCH\nFROM busybox\nARG V\nARG TARGETARCH\nARG LOCAL=l\nENV E=$V-$TARGETARCH-$LOCAL\n"
              "RUN echo\n", platform="linux/arm64", build_args={"HTTP_PROXY": "p", "UNUSED": "u"})
    env_step, run = g.stages[0].steps
    assert env_step.op == SetEnv((("E", "global-arm64-l"),))
    assert run.build_env == {"V": "global", "TARGETARCH": "arm64", "LOCAL": "l", "HTTP_PROXY": "p"}
    assert g.warnings and "UNUSED" in g.warnings[0]


def test_global_args_only_in_from_without_redeclaration():
    g = graph("ARG IMG=alpine\nARG V=x\nFROM $IMG\nENV E=[$V]\n")
    assert g.stages[0].base_image == "alpine" and g.stages[0].steps[0].op == SetEnv((("E", "[]"),))


def test_target_prunes_stages_and_broken_unused_stage():
    text = ("FROM a AS dep\nRUN dep\nFROM b AS broken\nCOPY --from=nonexistent-image /x /y\n"
            "FROM c AS final\nCOPY --from=dep /o /o\n")
    calls = []
    g = graph(text, resolve_base=lambda ref, plat: calls.append(ref) or BaseInfo())
    assert sorted(g.stages) == [0, 2] and g.order() == [0, 2] and g.stages[2].deps == {0}
    assert "b" not in calls  # the unused stage's base is never resolved
    g = graph(text, target="dep")
    assert list(g.stages) == [0]
    with pytest.raises(FrontendError, match="target stage 'nope' not found"):
        graph(text, target="nope")


def test_entrypoint_resets_cmd_and_workdir_joins():
    g = graph('FROM a\nWORKDIR /x\nWORKDIR y\nENTRYPOINT ["e"]\nCMD c\n')
    w1, w2, ep, cmd = g.stages[0].steps
    assert isinstance(w2, WorkdirStep) and w2.path == "/x/y"
    assert ep.op == SetEntrypoint(("e",), reset_cmd=True) and cmd.op == SetCmd(("/bin/sh", "-c", "c"))


def test_onbuild_triggers_of_the_base_run_first():
    g = graph("FROM base\nRUN mine\n", resolve_base=lambda r, p: BaseInfo(onbuild=["RUN triggered", "ENV T=1"]))
    kinds = [(type(s).__name__, s.text.split()[0]) for s in g.stages[0].steps]
    assert kinds == [("RunStep", "RUN"), ("ConfigStep", "ENV"), ("RunStep", "RUN")]
    assert g.stages[0].steps[0].args[-1] == "triggered"


def test_run_mounts_and_secret_not_in_key():
    g = graph("FROM a\nRUN --mount=type=secret,id=tok,required=true --mount=type=cache,target=/c,sharing=locked "
              "--mount=type=bind,source=s,target=t,rw --mount=type=tmpfs,target=/tmp,size=10m true\n")
    run = g.stages[0].steps[0]
    assert [m.type for m in run.mounts] == ["secret", "cache", "bind", "tmpfs"]
    assert run.mounts[0].target == "/run/secrets/tok" and run.mounts[0].required
    assert run.mounts[2].target == "/t" and not run.mounts[2].readonly
    assert "id=tok" in run.text and "sharing=locked" in run.text


def test_copy_flags():
    g = graph("FROM a AS s\nFROM b\nCOPY --from=s --chown=app:app --chmod=0640 --link --exclude=*.md --parents "
              "x y /d/\nADD --checksum=sha256:" + "a" * 64 + " https://example.com/f /f\n")
    cp, add = g.stages[1].steps
    assert isinstance(cp, CopyFromStep) and cp.from_stage == 0 and cp.chown == "app:app" and cp.chmod == 0o640
    assert cp.link and cp.parents and cp.excludes == ("*.md",) and cp.dest == "/d/"
    assert add.add and add.checksum.startswith("sha256:") and add.sources == ("https://example.com/f",)


def test_dump_is_stable():
    g = graph("FROM a\nENV X=1\nRUN echo $X\n")
    assert g.dump() == 'stage 0 - FROM a\n  2: ENV X=1\n  3: RUN ["/bin/sh", "-c", "echo $X"]\n'
    assert isinstance(g.stages[0].steps[0], ConfigStep) and isinstance(g.stages[0].steps[1], RunStep)


def test_onbuild_of_a_stage_runs_in_the_child_and_is_not_inherited():
    """Issue 8 class 7. BuildKit dockerfile2llb/convert.go resolveStages: a stage base's
    triggers are its base's OnbuildCommands ("onbuilds = append(onbuilds, obCmd.Expression)"),
    and dispatchState.init sets image.Config.OnBuild = nil ("onbuild triggers to not carry over
    from base stage"); the child keeps only its own ONBUILD."""
    g = graph("FROM a AS parent\nONBUILD RUN echo trig\nONBUILD ENV T=1\nRUN parent-only\n"
              "FROM parent AS child\nONBUILD RUN mine\nRUN echo $T\n")
    child = g.stages[1]
    kinds = [(type(s).__name__, s.keyword) for s in child.steps]
    assert kinds == [("RunStep", "RUN"), ("ConfigStep", "ENV"), ("ConfigStep", "ONBUILD"), ("RunStep", "RUN")]
    assert child.steps[0].args[-1] == "echo trig" and child.steps[0].span == Span("Dockerfile", 5)
    assert child.steps[1].op == SetEnv((("T", "1"),))
    assert child.steps[3].args[-1] == "echo $T"  # the shell expands it: T is in the image env
    # a grandchild runs the child's own trigger only
    g = graph("FROM a AS parent\nONBUILD RUN p\nFROM parent AS child\nONBUILD RUN c\nFROM child\nRUN x\n")
    assert [s.args[-1] for s in g.stages[2].steps if isinstance(s, RunStep)] == ["c", "x"]


def test_duplicate_stage_names_warn_and_the_later_stage_wins():
    """Issue 8 class 8. BuildKit validations.go validateStageNames runs the DuplicateStageName lint
    (a warning); dispatchStates.addState (convert.go) overwrites statesByName with each stage, so
    --target and --from name the last stage of that name, while FROM NAME resolves at add time
    (the latest one before it)."""
    text = ("FROM a AS one\nRUN first\nFROM one AS two\nRUN second\nFROM b AS one\nRUN third\n"
            "FROM c\nCOPY --from=one /x /x\n")
    g = graph(text)
    assert any("DuplicateStageName" in w and "Dockerfile:5" in w for w in g.warnings)
    final = g.stages[3]
    assert final.deps == {2} and final.steps[0].from_stage == 2
    g = graph(text, target="one")
    assert list(g.stages) == [2] and g.stages[2].steps[0].args[-1] == "third"
    g = graph(text, target="two")
    assert g.stages[1].base_stage == 0


@pytest.mark.parametrize("line,text", [
    ("COPY <<EOF /x", "COPY <<EOF /x"),
    ("COPY --chown=1:2 <<EOF /x", "COPY --chown=1:2 <<EOF /x"),
    ("COPY <<EOF f <<G /d/", "COPY f <<EOF <<G /d/"),
    ("ADD <<EOF /x", "ADD <<EOF /x"),
    ("COPY f /x", "COPY f /x"),
])
def test_copy_heredoc_history_text(line, text):
    """dockerfile2llb/convert_copy.go:99-128, 294-295, 320: the keyword, each flag, the paths, then
    " <<NAME" per heredoc and " DEST": one space apart, never two (BuildKit: "COPY <<EOF /x")."""
    body = "".join(f"body\n{w}\n" for w in ["EOF", "G"] if f"<<{w}" in line)
    g = graph(f"FROM a\n{line}\n{body}")
    assert g.stages[0].steps[0].text == text
