"""The step graph's data: a closed union of frozen dataclasses, fully expanded.

A build is a set of ``Stage``s (only those the target needs); each stage is a
base (an image reference, another stage, or scratch) and a list of ``Step``s.
``Step`` is a closed union, one member per instruction form:

- ``RunStep``: RUN, a process (argv, build-arg environment, mounts, network)
- ``CopyStep``: COPY/ADD from the build context (paths, URLs, heredoc files)
- ``CopyFromStep``: COPY/ADD ``--from=`` another stage, an image or a named context
- ``WorkdirStep``: WORKDIR, a config change that also creates the directory
- ``ConfigStep``: an edit of the image configuration, one typed ``ConfigOp``
  (``SetEnv``, ``SetLabels``, ``SetCmd``...), no filesystem change

Every field is expanded (ARG and ENV values substituted, flags parsed, heredoc
bodies read), so an executor never sees Dockerfile syntax. Every step carries
``span`` (file and first line), ``keyword`` (the instruction as written) and
``text``: the canonical expanded instruction for history and the step log,
never holding a secret's value.

Adding an instruction: its dataclass here (a ``ConfigOp`` member when it only
edits the config), its parser in ``frontend/graph.py`` and one executor module
in ``builder/build/steps/``; the executor's ``match`` ends in ``assert_never``,
so mypy reports a kind nobody executes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, TypeAlias


@dataclass(frozen=True)
class Span:
    """Where an instruction starts: ``file`` as the user named it, ``line`` 1-based."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class RunMount:
    """One ``RUN --mount``: ``type`` is bind | cache | tmpfs | secret | ssh; ``target`` absolute."""

    type: str
    target: str
    source: str = ""
    from_stage: int | None = None
    from_image: str | None = None
    readonly: bool = True
    id: str = ""
    sharing: str = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    env: str | None = None
    size: str = ""


@dataclass(frozen=True)
class InlineFile:
    """A COPY/ADD heredoc: the file ``name`` (one path component: see heredoc.heredoc_file_name)
    with ``content`` (expanded when the delimiter was unquoted)."""

    name: str
    content: bytes


@dataclass(frozen=True, kw_only=True)
class StepBase:
    span: Span
    keyword: str  # RUN, COPY, ADD, ENV... as written (an ONBUILD trigger: the trigger's)
    text: str  # canonical expanded instruction (history, step log); no secret values

    @property
    def line(self) -> int:
        return self.span.line


@dataclass(frozen=True, kw_only=True)
class RunStep(StepBase):
    args: tuple[str, ...]  # argv, the shell form already wrapped in SHELL
    build_env: Mapping[str, str] = field(default_factory=dict)  # ARGs visible to the command, not persisted
    mounts: tuple[RunMount, ...] = ()
    network: str | None = None  # None: the build's default; "none" | "host"
    security: str = "sandbox"
    #: a heredoc script with a ``#!`` line: the file /dev/pipes/NAME (0755, on a read-only mount that
    #: never reaches the layer) that ``args`` runs (BuildKit dockerfile2llb/convert.go:1365-1382)
    script: InlineFile | None = None


@dataclass(frozen=True, kw_only=True)
class _CopyFields(StepBase):
    sources: tuple[str, ...]  # as written after expansion: paths, globs (URLs for ADD)
    dest: str  # absolute; a trailing "/" means "into this directory"
    add: bool = False  # ADD: archives extracted, URLs fetched
    chown: str | None = None  # USER[:GROUP], names or ids, expanded
    chmod: int | None = None
    link: bool = False
    excludes: tuple[str, ...] = ()
    parents: bool = False
    checksum: str | None = None  # ADD --checksum=sha256:...
    keep_git_dir: bool = False


@dataclass(frozen=True, kw_only=True)
class CopyStep(_CopyFields):
    """COPY/ADD from the build context, with heredoc files."""

    inline: tuple[InlineFile, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CopyFromStep(_CopyFields):
    """COPY/ADD --from: exactly one of ``from_stage`` (index) and ``from_image`` (an image
    reference, or the name of a ``--build-context``) is set."""

    from_stage: int | None = None
    from_image: str | None = None


@dataclass(frozen=True, kw_only=True)
class WorkdirStep(StepBase):
    path: str  # absolute, normalized; created (with its parents) if missing


# --- configuration edits: no filesystem change -------------------------------
@dataclass(frozen=True)
class SetEnv:
    pairs: tuple[tuple[str, str], ...]  # set in order; an existing key keeps its position


@dataclass(frozen=True)
class SetLabels:
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SetCmd:
    argv: tuple[str, ...]


@dataclass(frozen=True)
class SetEntrypoint:
    argv: tuple[str, ...]
    reset_cmd: bool  # no CMD yet in this stage: the base's CMD is dropped (Docker's rule)


@dataclass(frozen=True)
class SetShell:
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Expose:
    ports: tuple[str, ...]  # PORT[-END][/proto], validated


@dataclass(frozen=True)
class AddVolumes:
    paths: tuple[str, ...]


@dataclass(frozen=True)
class SetUser:
    user: str


@dataclass(frozen=True)
class SetHealthcheck:
    """``test`` is ["NONE"], ["CMD", argv...] or ["CMD-SHELL", cmd]; durations in nanoseconds."""

    test: tuple[str, ...]
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None


@dataclass(frozen=True)
class AddOnBuild:
    trigger: str  # the instruction text, run by a later build FROM this image or stage


@dataclass(frozen=True)
class SetStopSignal:
    signal: str  # SIGNAME or a number


@dataclass(frozen=True)
class SetAuthor:
    author: str  # MAINTAINER: the image's top-level "author"


ConfigOp: TypeAlias = (SetEnv | SetLabels | SetCmd | SetEntrypoint | SetShell | Expose | AddVolumes | SetUser
                       | SetHealthcheck | AddOnBuild | SetStopSignal | SetAuthor)


@dataclass(frozen=True, kw_only=True)
class ConfigStep(StepBase):
    op: ConfigOp


Step: TypeAlias = RunStep | CopyStep | CopyFromStep | WorkdirStep | ConfigStep


@dataclass
class Stage:
    index: int
    name: str | None
    span: Span  # the FROM line
    base_image: str | None  # None for a stage base or scratch
    base_stage: int | None
    platform: str | None
    steps: list[Step] = field(default_factory=list)
    deps: set[int] = field(default_factory=set)

    @property
    def label(self) -> str:
        return self.name or str(self.index)

    @property
    def line(self) -> int:
        return self.span.line


@dataclass
class StepGraph:
    stages: dict[int, Stage]
    target: int
    warnings: list[str] = field(default_factory=list)

    def order(self) -> list[int]:
        """Stage indexes so that every stage comes after those it needs."""
        done: list[int] = []

        def visit(i: int) -> None:
            if i in done:
                return
            for d in sorted(self.stages[i].deps):
                visit(d)
            done.append(i)
        visit(self.target)
        return done

    def deps(self, index: int) -> set[int]:
        return set(self.stages[index].deps)

    def dump(self) -> str:
        lines = []
        for i in self.order():
            st = self.stages[i]
            base = st.base_image if st.base_image is not None else f"stage {st.base_stage}" \
                if st.base_stage is not None else "scratch"
            lines.append(f"stage {i} {st.name or '-'} FROM {base}" + (f" platform={st.platform}" if st.platform else ""))
            for s in st.steps:
                lines.append(f"  {s.line}: {s.text}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class BaseInfo:
    """What the frontend needs of a base image or stage: its environment and ONBUILD triggers."""

    env: list[str] = field(default_factory=list)
    workdir: str = ""
    shell: list[str] | None = None
    onbuild: list[str] = field(default_factory=list)
