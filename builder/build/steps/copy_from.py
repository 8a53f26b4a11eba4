"""COPY/ADD --from: files of another stage or an image, copied snapshot to
snapshot inside the namespace (owners, modes and xattrs as they are there).
``--from=NAME`` naming a ``--build-context`` directory copies from it as from
the context.

The last filesystem step of a stage nothing else reads (Builder.last_use) has its layer written
straight from the source snapshot (snapshots.copy_between_layer_to_fd: each file read once into
the tar, none created), the bytes the copy and its commit give; anything only the copy can make
falls back to it.

Cache key: the parent filesystem, the expanded fields, and a digest of the
copied subtree of the source (paths, modes, owners, contents, link targets,
xattrs; ``treedigest``), so a rebuilt source stage that left these files
identical is a cache hit. An image source counts by its layers."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from builder.build.state import StageState, Streamed
from builder.build.steps.copy import copy_files, fields_of
from builder.scripted import stream_layer
from builder.workspace import snapshots
from frontend.steps import CopyFromStep
from snapshotter.copylayer import NotStreamable

if TYPE_CHECKING:
    from builder.build.builder import Builder

log = logging.getLogger("bale")


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

    def run() -> Streamed | None:
        sc = b.container(src)
        dc = b.container(st)
        root = str(b.rt.snapshots_root)
        if b.last_use(st, step) and not dc.created_paths:  # nothing reads the copy but its layer
            try:
                made = stream_layer(
                    b.ws, b.rt, snapshots.copy_between_layer_to_fd, root, sc.driver, sc.key, root, dc.driver,
                    dc.key, list(step.sources), step.dest, step.chmod, step.chown, int(time.time()), b.epoch,
                    source=lambda out: None, compression=b.opts.compression, level=b.opts.compression_level,
                    image_format=b.opts.image_format)
                log.debug("COPY --from: layer written from the source snapshot")
                return Streamed(made)
            except NotStreamable as exc:
                log.debug("COPY --from into the snapshot: %s", exc)
        b.rt.call(snapshots.copy_between, str(b.rt.snapshots_root), sc.driver, sc.key,
                  str(b.rt.snapshots_root), dc.driver, dc.key, list(step.sources), step.dest, step.chmod,
                  step.chown)
        return None

    b.fs_step(st, step.keyword, step.text, key, run)
