"""The stage scheduler and the step runner.

Stages whose dependencies are done run in parallel (up to ``--jobs``); inside
a stage the steps run in order, each through ``execute``: a ``match`` over the
closed ``frontend.steps.Step`` union that ends in ``assert_never``, so a step
kind without an executor is a mypy error. ``run_step`` is the one place a
failure gets its location: whatever a step raises (a BaleError, a snapshot
error, an OSError) leaves it as ``StepError`` reading
``FILE:LINE: INSTRUCTION: cause``, with the original chained as ``__cause__``.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, assert_never

from builder.build.state import StageState
from builder.build.steps import config, copy, copy_from, run, workdir
from builder.build.steps.from_ import start_stage
from builder.errors import BaleError, StepError
from frontend.errors import FrontendError
from frontend.steps import ConfigStep, CopyFromStep, CopyStep, RunStep, Step, StepGraph, WorkdirStep
from snapshotter.errors import SnapshotError

if TYPE_CHECKING:
    from builder.build.builder import Builder


def execute(b: "Builder", st: StageState, step: Step) -> None:
    """Run one step with its executor."""
    match step:
        case RunStep():
            run.execute(b, st, step)
        case CopyStep():
            copy.execute(b, st, step)
        case CopyFromStep():
            copy_from.execute(b, st, step)
        case WorkdirStep():
            workdir.execute(b, st, step)
        case ConfigStep():
            config.execute(b, st, step)
        case _:
            assert_never(step)


def _cause(exc: BaseException) -> tuple[str, int]:
    """The one-line cause of a step failure and the exit code it keeps."""
    if isinstance(exc, OSError) and not isinstance(exc, BaleError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}", 1
    if isinstance(exc, (BaleError, FrontendError)):
        return str(exc), exc.exit_code
    if isinstance(exc, SnapshotError):
        return str(exc), 1
    return f"internal error: {type(exc).__name__}: {exc}", 1


def run_step(b: "Builder", st: StageState, step: Step) -> None:
    """``execute`` with the step's location on every failure."""
    try:
        execute(b, st, step)
    except StepError:
        raise
    except Exception as exc:
        cause, code = _cause(exc)
        raise StepError(step.span.file, step.span.line, step.keyword, cause, exit_code=code) from exc


def run_stage(b: "Builder", graph: StepGraph, index: int, counter: list[int], total: int) -> None:
    stage = graph.stages[index]
    try:
        st = start_stage(b, stage)
    except StepError:
        raise
    except Exception as exc:
        cause, code = _cause(exc)
        raise StepError(stage.span.file, stage.span.line, "FROM", cause, exit_code=code) from exc
    with b.lock:
        b.states[index] = st
        counter[0] += 1
        n = counter[0]
    base = stage.base_image or (f"stage {stage.base_stage}" if stage.base_stage is not None else "scratch")
    b.say(f"[{stage.label}] STEP {n}/{total}: FROM {base}")  # buildah's FROM step line
    for step in stage.steps:
        with b.lock:
            counter[0] += 1
            n = counter[0]
        b.say(f"[{stage.label}] STEP {n}/{total}: {step.text}")
        t0 = time.monotonic()
        run_step(b, st, step)
        if not isinstance(step, ConfigStep):
            b.say(f"--> {time.monotonic() - t0:.2f}s")


def prefetch_images(b: "Builder", graph: StepGraph) -> None:
    """Resolve (pull, as the pull policy says) every image that COPY --from and RUN --mount=from=
    name before any stage runs: FROM images are resolved while the graph is built, and these would
    otherwise be pulled from the stage threads, twice when two parallel stages name one image.
    (Store concurrency, issue 7 item 8; kept apart from the scheduler proper.)"""
    for i in graph.order():
        for step in graph.stages[i].steps:
            refs = [step.from_image] if isinstance(step, CopyFromStep) and step.from_image else []
            if isinstance(step, RunStep):
                refs += [m.from_image for m in step.mounts if m.from_image]
            for ref in refs:
                try:
                    b.named_state(ref)
                except StepError:
                    raise
                except Exception as exc:
                    cause, code = _cause(exc)
                    raise StepError(step.span.file, step.span.line, step.keyword, cause, exit_code=code) from exc


def run_graph(b: "Builder", graph: StepGraph) -> None:
    """Every stage the target needs, each after the stages it reads."""
    prefetch_images(b, graph)
    order = graph.order()
    total = sum(len(graph.stages[i].steps) + 1 for i in order)  # each stage's FROM is a step, as buildah counts
    counter = [0]
    jobs = max(1, b.opts.jobs)
    done: set[int] = set()
    pending = list(order)
    with ThreadPoolExecutor(jobs) as pool:
        running: dict[int, Future[None]] = {}
        while pending or running:
            for i in list(pending):
                if graph.stages[i].deps <= done and len(running) < jobs:
                    pending.remove(i)
                    running[i] = pool.submit(run_stage, b, graph, i, counter, total)
            if not running:
                raise BaleError("internal error: stage dependencies cannot be satisfied")
            while True:
                ready = [i for i, f in running.items() if f.done()]
                if ready:
                    finished = ready[0]
                    break
                time.sleep(0.01)
            running.pop(finished).result()
            done.add(finished)
