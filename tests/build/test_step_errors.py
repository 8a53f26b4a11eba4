"""Every failure of a step gets its location in one place, the step runner
(issue 7, item 6): ``FILE:LINE: INSTRUCTION: cause``, the cause chained."""
from __future__ import annotations

import errno

import pytest

from builder.build import scheduler
from builder.errors import BuildError, RunFailed, StepError, UsageError
from frontend.steps import RunStep, Span
from snapshotter.errors import SnapshotError

STEP = RunStep(span=Span("ci/Containerfile", 12), keyword="RUN", text="RUN make", args=("make",))


@pytest.mark.parametrize("exc,message,code", [
    (OSError(errno.EACCES, "Permission denied", "/ctx/locked"), "Permission denied: /ctx/locked", 1),
    (SnapshotError("overlay mount failed: EINVAL"), "overlay mount failed: EINVAL", 1),
    (BuildError("make: exited with status 2"), "make: exited with status 2", 1),
    (UsageError("--secret id=x: cannot read f"), "--secret id=x: cannot read f", 2),
    (RunFailed("run: exited 3", 3), "run: exited 3", 3),
    (KeyError("x"), "internal error: KeyError: 'x'", 1),
])
def test_step_runner_locates_and_chains(monkeypatch, exc, message, code):
    def fail(b, st, step):
        raise exc
    monkeypatch.setattr(scheduler, "execute", fail)
    with pytest.raises(StepError) as got:
        scheduler.run_step(None, None, STEP)  # type: ignore[arg-type]
    assert str(got.value) == f"ci/Containerfile:12: RUN: {message}"
    assert got.value.__cause__ is exc and got.value.exit_code == code


def test_a_located_error_is_not_located_twice(monkeypatch):
    inner = StepError("Dockerfile", 3, "COPY", "boom")
    monkeypatch.setattr(scheduler, "execute", lambda b, st, step: (_ for _ in ()).throw(inner))
    with pytest.raises(StepError) as got:
        scheduler.run_step(None, None, STEP)  # type: ignore[arg-type]
    assert got.value is inner


def test_no_executor_formats_a_location():
    """The location is added by the runner only: no executor module spells FILE:LINE itself."""
    import pathlib
    root = pathlib.Path(scheduler.__file__).parent
    for path in [*root.glob("steps/*.py"), root / "mounts.py", root / "builder.py"]:
        text = path.read_text()
        assert "filename}:" not in text and "step.line}" not in text, path


def test_every_step_kind_and_config_op_has_a_case():
    """The match in scheduler.execute and in steps/config.apply names every member of the
    closed unions (mypy's assert_never makes a missing one a type error; this keeps it visible
    without running mypy)."""
    import ast
    import inspect
    import typing

    from builder.build.steps import config
    from frontend.steps import ConfigOp, Step
    for fn, union in ((scheduler.execute, Step), (config.apply, ConfigOp)):
        tree = ast.parse(inspect.getsource(fn))
        cases = {c.pattern.cls.id for c in ast.walk(tree) if isinstance(c, ast.match_case)
                 and isinstance(c.pattern, ast.MatchClass) and isinstance(c.pattern.cls, ast.Name)}
        assert cases == {t.__name__ for t in typing.get_args(union)}, fn.__name__
