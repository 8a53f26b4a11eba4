"""COPY/ADD --from: files of another stage or an image, copied snapshot to
snapshot inside the namespace (owners, modes and xattrs as they are there).
``--from=NAME`` naming a ``--build-context`` directory copies from it as from
the context.

Cache key: the parent filesystem, the expanded fields, and a digest of the
copied subtree of the source (paths, modes, owners, contents, link targets,
xattrs; ``treedigest``), so a rebuilt source stage that left these files
identical is a cache hit. An image source counts by its layers."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from builder.build.state import StageState
from builder.build.steps.copy import copy_files, fields_of
from builder.workspace import snapshots
from frontend.steps import CopyFromStep

if TYPE_CHECKING:
    from builder.build.builder import Builder


def execute(b: "Builder", st: StageState, step: CopyFromStep) -> None:
    if step.from_stage is not None:
        src = b.states[step.from_stage]
    else:
        assert step.from_image is not None
        named = b.named_state(step.from_image)
        if isinstance(named, Path):
            copy_files(b, st, step, named, None)
            return
        src = named

    def key() -> Mapping[str, object]:
        origin = "image:" + src.chain if src.index < 0 else b.tree_digest(src, list(step.sources))
        return {**fields_of(step), "from": origin}

    def run() -> None:
        sc = b.container(src)
        dc = b.container(st)
        b.rt.call(snapshots.copy_between, str(b.rt.snapshots_root), sc.driver, sc.key,
                  str(b.rt.snapshots_root), dc.driver, dc.key, list(step.sources), step.dest, step.chmod,
                  step.chown)

    b.fs_step(st, step.keyword, step.text, key, run)
