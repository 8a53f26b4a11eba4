"""The step graph's data: plain, fully expanded, ready for an executor.

A build is a list of ``Stage``s (only those the target needs); each stage is a
base (an image reference, another stage, or scratch) and a list of ``Step``s:

- ``RunStep``: a process (argv, build-arg environment, RUN mounts, network)
- ``CopyStep``: COPY/ADD sources (context paths, URLs, inline heredoc files,
  another stage, an image, or a named build context) to a destination
- ``ConfigStep``: an edit of the image configuration, no filesystem change
  (``mkdir`` is set for WORKDIR, whose directory is created if missing)

Every step carries ``line`` (first line in the Dockerfile), ``keyword`` and
``text``: the canonical expanded instruction, used for history and cache keys
and never holding secret values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunMount:
    type: str  # bind | cache | tmpfs | secret | ssh
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


@dataclass
class Step:
    line: int
    keyword: str
    text: str


@dataclass
class RunStep(Step):
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # build args visible to the command (not persisted)
    mounts: list[RunMount] = field(default_factory=list)
    network: str | None = None
    stdin: bytes | None = None


@dataclass
class InlineFile:
    name: str
    content: bytes


@dataclass
class CopyStep(Step):
    sources: list[str] = field(default_factory=list)
    inline: list[InlineFile] = field(default_factory=list)
    dest: str = "/"
    from_stage: int | None = None
    from_image: str | None = None
    from_context: str | None = None
    chown: str | None = None
    chmod: int | None = None
    link: bool = False
    excludes: list[str] = field(default_factory=list)
    parents: bool = False
    add: bool = False
    checksum: str | None = None
    keep_git_dir: bool = False


@dataclass
class ConfigStep(Step):
    changes: dict[str, Any] = field(default_factory=dict)
    mkdir: str | None = None  # WORKDIR: create this directory if missing


@dataclass
class Stage:
    index: int
    name: str | None
    line: int
    base_image: str | None  # None for a stage base or scratch
    base_stage: int | None
    platform: str | None
    steps: list[Step] = field(default_factory=list)
    deps: set[int] = field(default_factory=set)

    @property
    def label(self) -> str:
        return self.name or str(self.index)


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
    """What the frontend needs of a base image: its environment and ONBUILD triggers."""

    env: list[str] = field(default_factory=list)
    workdir: str = ""
    shell: list[str] | None = None
    onbuild: list[str] = field(default_factory=list)
