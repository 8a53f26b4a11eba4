"""Cache keys come from what a step really reads (issue 7, item 3).

Each row builds the same Dockerfile twice with one input changed and says
whether the key of one step must change. Keys are computed by the real
executors (``scheduler.execute``) over a recording builder whose ``fs_step``
notes the key instead of running anything; COPY --from digests a plain
directory with ``treedigest.digest_paths``, the function the namespace runs.

BuildKit is the model: a step's cache key is its op definition plus the
content checksums of what it reads (solver/llbsolver/ops/file.go and exec.go
``CacheMap``: ``ComputeDigestFunc`` per input, ``contenthash.Checksum`` of the
selected paths), so metadata-only instructions do not invalidate later RUNs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest

from builder.build import scheduler
from builder.build.cache import FileDigests, step_key
from builder.build.options import BuildOptions
from builder.build.state import StageState
from builder.image.commit import Layer
from builder.image.oci import Descriptor, ImageConfig
from builder.workspace import treedigest
from frontend.dockerignore import Matcher
from frontend.graph import build_graph
from frontend.steps import BaseInfo, ConfigStep

BASE_ENV = ["PATH=/bin"]


@dataclass
class Inputs:
    dockerfile: str
    build_args: dict[str, str] = field(default_factory=dict)
    context: dict[str, str] = field(default_factory=dict)  # context files
    dockerignore: str = ""
    stage_files: dict[str, str] = field(default_factory=dict)  # the source stage's filesystem
    stage_layer: str = "sha256:" + "1" * 64  # the source stage's last layer
    base_layer: str = "sha256:" + "2" * 64  # the tested stage's base layer


class RecordingBuilder:
    """What the executors use of a Builder; ``fs_step`` records the key it would look up."""

    def __init__(self, tmp: Path, inp: Inputs) -> None:
        self.context = SimpleNamespace(dir=tmp / "ctx")
        self.ignore = Matcher.from_text(inp.dockerignore) if inp.dockerignore else None
        self.file_digests = FileDigests(tmp / "filedigests.db")
        self.opts = BuildOptions()
        self.store = SimpleNamespace(tmp_dir=tmp)
        self.epoch = 0
        self.stage_root = tmp / "stage"
        self.states: dict[int, StageState] = {}
        self.keys: list[str | None] = []

    def fs_step(self, st: StageState, kind: str, text: str, key_fields: Callable[[], dict], run: object) -> bool:
        self.keys.append(step_key(kind, st.chain, key_fields()))
        return False

    def history(self, st: StageState, text: str, empty: bool) -> None:
        self.keys.append(None)  # a config step: no key, but it may change later keys

    def tree_digest(self, src: StageState, patterns: list[str]) -> str:
        return treedigest.digest_paths(self.stage_root, patterns)

    def named_state(self, name: str) -> StageState:
        return StageState(-1, _cfg(), [_layer("sha256:" + "3" * 64)], name)


def _cfg() -> ImageConfig:
    return ImageConfig(architecture="amd64", os="linux", config={"Env": list(BASE_ENV)})


def _layer(diff_id: str) -> Layer:
    return Layer(Descriptor("application/vnd.oci.image.layer.v1.tar", "sha256:" + "0" * 64, 1), diff_id)


def _write(root: Path, files: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)


def keys_of(tmp: Path, inp: Inputs) -> list[str | None]:
    """The key of every step of the last stage (None for config steps)."""
    tmp.mkdir(parents=True)
    _write(tmp / "ctx", inp.context)
    _write(tmp / "stage", inp.stage_files)
    b = RecordingBuilder(tmp, inp)
    g = build_graph(inp.dockerfile, build_args=inp.build_args,
                    resolve_base=lambda ref, plat: BaseInfo(env=list(BASE_ENV)))
    for i in g.order():
        if i != g.target:
            b.states[i] = StageState(i, _cfg(), [_layer(inp.stage_layer)], f"stage-{i}")
    st = StageState(g.target, _cfg(), [_layer(inp.base_layer)], "base")
    for step in g.stages[g.target].steps:
        scheduler.execute(b, st, step)  # type: ignore[arg-type]
    b.file_digests.close()
    return b.keys


CTX = {"f": "data\n", "app/main.py": "print(1)\n", "app/util.py": "x = 1\n", "other.txt": "o\n"}
STAGE = {"opt/venv/lib/a.py": "a\n", "opt/venv/bin/tool": "#!/bin/sh\n", "etc/unrelated": "u\n"}
COPY_CHOWN = "FROM busybox\nARG OWNER=1000\nARG UNUSED=x\nCOPY --chown=$OWNER f /f\n"
COPY_FROM = "FROM busybox AS builder\nRUN make\nFROM busybox\nCOPY --from=builder /opt/venv /opt/venv\n"
RUN_ENV = "FROM busybox\nENV MODE=fast\nLABEL team=a\nARG V=1\nRUN echo $MODE\n"
RUN_BIND = "FROM busybox\nRUN --mount=type=bind,source=app,target=/src make\n"
RUN_FROM = "FROM busybox AS builder\nRUN make\nFROM busybox\nRUN --mount=type=bind,from=builder,source=/opt/venv,target=/v ls\n"
WORKDIR = "FROM busybox\nUSER 1000\nWORKDIR /w\n"

#: (name, base inputs, a change, index of the step whose key is compared, must the key change?)
ROWS: list[tuple[str, Inputs, Callable[[Inputs], Inputs], int, bool]] = [
    # COPY from the context
    ("copy: build-arg used by --chown", Inputs(COPY_CHOWN, context=CTX),
     lambda i: Inputs(i.dockerfile, {"OWNER": "2000"}, i.context), -1, True),
    ("copy: unrelated build-arg", Inputs(COPY_CHOWN, context=CTX),
     lambda i: Inputs(i.dockerfile, {"UNUSED": "y"}, i.context), -1, False),
    ("copy: content of the copied file", Inputs(COPY_CHOWN, context=CTX),
     lambda i: Inputs(i.dockerfile, context={**CTX, "f": "changed\n"}), -1, True),
    ("copy: a file it does not copy", Inputs(COPY_CHOWN, context=CTX),
     lambda i: Inputs(i.dockerfile, context={**CTX, "other.txt": "changed\n"}), -1, False),
    ("copy: a file in the copied directory", Inputs("FROM b\nCOPY app /app\n", context=CTX),
     lambda i: Inputs(i.dockerfile, context={**CTX, "app/util.py": "x = 2\n"}), -1, True),
    ("copy: a .dockerignored file in the copied directory",
     Inputs("FROM b\nCOPY app /app\n", context=CTX, dockerignore="app/util.py\n"),
     lambda i: Inputs(i.dockerfile, context={**CTX, "app/util.py": "x = 2\n"}, dockerignore=i.dockerignore), -1, False),
    ("copy: --chmod", Inputs("FROM b\nCOPY f /f\n", context=CTX),
     lambda i: Inputs("FROM b\nCOPY --chmod=0600 f /f\n", context=CTX), -1, True),
    ("copy: destination", Inputs("FROM b\nCOPY f /f\n", context=CTX),
     lambda i: Inputs("FROM b\nCOPY f /g\n", context=CTX), -1, True),
    ("copy: ENV not used by it", Inputs("FROM b\nENV A=1\nCOPY f /f\n", context=CTX),
     lambda i: Inputs("FROM b\nENV A=2\nCOPY f /f\n", context=CTX), -1, False),
    ("copy: ENV expanded into its destination", Inputs("FROM b\nENV D=/x\nCOPY f $D/\n", context=CTX),
     lambda i: Inputs("FROM b\nENV D=/y\nCOPY f $D/\n", context=CTX), -1, True),
    ("copy: heredoc body", Inputs("FROM b\nCOPY <<EOF /h\none\nEOF\n"),
     lambda i: Inputs("FROM b\nCOPY <<EOF /h\ntwo\nEOF\n"), -1, True),
    ("copy: parent layers", Inputs(COPY_CHOWN, context=CTX),
     lambda i: Inputs(i.dockerfile, context=CTX, base_layer="sha256:" + "9" * 64), -1, True),
    # COPY --from another stage
    ("copy --from: a file in the copied subtree", Inputs(COPY_FROM, stage_files=STAGE),
     lambda i: Inputs(i.dockerfile, stage_files={**STAGE, "opt/venv/lib/a.py": "b\n"}), -1, True),
    ("copy --from: a file elsewhere in the source stage", Inputs(COPY_FROM, stage_files=STAGE),
     lambda i: Inputs(i.dockerfile, stage_files={**STAGE, "etc/unrelated": "changed\n"},
                      stage_layer="sha256:" + "8" * 64), -1, False),
    ("copy --from: a file added to the copied subtree", Inputs(COPY_FROM, stage_files=STAGE),
     lambda i: Inputs(i.dockerfile, stage_files={**STAGE, "opt/venv/new": "n\n"}), -1, True),
    ("copy --from: source stage rebuilt, subtree identical", Inputs(COPY_FROM, stage_files=STAGE),
     lambda i: Inputs(i.dockerfile, stage_files=STAGE, stage_layer="sha256:" + "7" * 64), -1, False),
    ("copy --from: --chown", Inputs(COPY_FROM, stage_files=STAGE),
     lambda i: Inputs(i.dockerfile.replace("--from=builder", "--from=builder --chown=1:1"), stage_files=STAGE),
     -1, True),
    # RUN
    ("run: ENV it sees", Inputs(RUN_ENV), lambda i: Inputs(RUN_ENV.replace("MODE=fast", "MODE=slow")), -1, True),
    ("run: LABEL before it", Inputs(RUN_ENV), lambda i: Inputs(RUN_ENV.replace("team=a", "team=b")), -1, False),
    ("run: build-arg it sees", Inputs(RUN_ENV), lambda i: Inputs(RUN_ENV, {"V": "2"}), -1, True),
    ("run: undeclared build-arg", Inputs(RUN_ENV), lambda i: Inputs(RUN_ENV, {"OTHER": "2"}), -1, False),
    ("run: USER", Inputs(RUN_ENV), lambda i: Inputs(RUN_ENV.replace("RUN", "USER 1000\nRUN")), -1, True),
    ("run: command", Inputs(RUN_ENV), lambda i: Inputs(RUN_ENV.replace("echo", "printf")), -1, True),
    ("run: parent layers", Inputs(RUN_ENV), lambda i: Inputs(RUN_ENV, base_layer="sha256:" + "9" * 64), -1, True),
    ("run: --network", Inputs(RUN_ENV), lambda i: Inputs(RUN_ENV.replace("RUN", "RUN --network=none")), -1, True),
    ("run: cache mount uid", Inputs("FROM b\nRUN --mount=type=cache,target=/c true\n"),
     lambda i: Inputs("FROM b\nRUN --mount=type=cache,target=/c,uid=1000 true\n"), -1, True),
    ("run: file under a context bind mount", Inputs(RUN_BIND, context=CTX),
     lambda i: Inputs(RUN_BIND, context={**CTX, "app/main.py": "print(2)\n"}), -1, True),
    ("run: file outside a context bind mount", Inputs(RUN_BIND, context=CTX),
     lambda i: Inputs(RUN_BIND, context={**CTX, "other.txt": "changed\n"}), -1, False),
    ("run: file under a stage bind mount", Inputs(RUN_FROM, stage_files=STAGE),
     lambda i: Inputs(RUN_FROM, stage_files={**STAGE, "opt/venv/bin/tool": "#!/bin/bash\n"}), -1, True),
    ("run: file outside a stage bind mount", Inputs(RUN_FROM, stage_files=STAGE),
     lambda i: Inputs(RUN_FROM, stage_files={**STAGE, "etc/unrelated": "v\n"}, stage_layer="sha256:" + "6" * 64),
     -1, False),
    # WORKDIR
    ("workdir: path", Inputs(WORKDIR), lambda i: Inputs(WORKDIR.replace("/w", "/v")), -1, True),
    ("workdir: USER owning what it creates", Inputs(WORKDIR), lambda i: Inputs(WORKDIR.replace("1000", "1001")),
     -1, True),
    ("workdir: ENV", Inputs(WORKDIR), lambda i: Inputs(WORKDIR.replace("USER", "ENV X=1\nUSER")), -1, False),
]


@pytest.mark.parametrize("name,base,change,index,must_change", ROWS, ids=[r[0] for r in ROWS])
def test_cache_key_changes_exactly_with_what_the_step_reads(tmp_path, name, base, change, index, must_change):
    before = keys_of(tmp_path / "a", base)
    after = keys_of(tmp_path / "b", change(base))
    assert before[index] is not None and after[index] is not None
    assert (before[index] != after[index]) is must_change, name


def test_config_steps_have_no_key_and_every_fs_step_has_one(tmp_path):
    keys = keys_of(tmp_path / "a", Inputs("FROM b\nENV A=1\nLABEL l=v\nWORKDIR /w\nRUN true\nCOPY f /f\n", context=CTX))
    assert [k is None for k in keys] == [True, True, False, False, False]


def test_unchanged_context_files_are_not_read_again(tmp_path):
    """The stat-keyed digest cache: a second digest of the same tree reads no file;
    a rewritten file is read again."""
    from builder.build.copier import Source
    from builder.build.digest import context_digest
    _write(tmp_path / "ctx", CTX)
    fd = FileDigests(tmp_path / "digests.db")
    src = [Source(tmp_path / "ctx", ".", True)]
    first = context_digest(src, None, None, fd)
    assert fd.reads == 4
    fd.close()
    fd = FileDigests(tmp_path / "digests.db")  # persisted across builds
    assert context_digest(src, None, None, fd) == first and fd.reads == 0
    (tmp_path / "ctx" / "f").write_text("new!\n")
    assert context_digest(src, None, None, fd) != first and fd.reads == 1


def test_no_hashing_when_the_cache_is_off(tmp_path):
    """Without --layers (or with --no-cache) no key is computed: the digest database is never created."""
    from builder.build.cache import LayerCache
    assert not LayerCache(SimpleNamespace(), tmp_path, layers=False, no_cache=False).enabled  # type: ignore[arg-type]
    assert not LayerCache(SimpleNamespace(), tmp_path, layers=True, no_cache=True).enabled  # type: ignore[arg-type]
