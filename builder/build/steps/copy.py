"""COPY/ADD from the build context (or a ``--build-context`` directory): files,
globs, URLs and archives (ADD), heredoc files, copied straight into the stage's
snapshot (snapshotter.copytree; ADD's archives as a tar).

Cache key: the parent filesystem, the expanded fields (sources, destination,
--chown, --chmod, --exclude, ...), heredoc contents and a digest of the selected
context files (after .dockerignore) — contents through the stat-keyed
``FileDigests``, so unchanged files are not read again. ENV and ARG values
count only through the fields they expanded into."""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from builder.build import copier
from builder.build.digest import context_digest, entry_record
from builder.build.state import StageState, Streamed
from builder.scripted import absolute_dest, container_path_kind, copy_plan_into, copy_plan_layer
from frontend.dockerignore import Matcher
from frontend.steps import CopyFromStep, CopyStep
from snapshotter.copylayer import NotStreamable

if TYPE_CHECKING:
    from builder.build.builder import Builder

log = logging.getLogger("bale")


def fields_of(step: CopyStep | CopyFromStep) -> dict[str, object]:
    """The expanded fields every COPY/ADD key holds."""
    return {"add": step.add, "sources": step.sources, "dest": step.dest, "chown": step.chown, "chmod": step.chmod,
            "link": step.link, "excludes": step.excludes, "parents": step.parents, "checksum": step.checksum,
            "keep_git_dir": step.keep_git_dir}


def execute(b: "Builder", st: StageState, step: CopyStep) -> None:
    copy_files(b, st, step, b.context.dir, b.ignore if b.ignore else None)


def copy_files(b: "Builder", st: StageState, step: CopyStep | CopyFromStep, context: Path,
               excluded: copier.Excluder | None) -> None:
    temp: list[Path] = []
    try:
        sources = copier.resolve_sources(context, list(step.sources), add=step.add, excluded=excluded) \
            if step.sources else []
        from_context = list(sources)
        inline = step.inline if isinstance(step, CopyStep) else ()
        for item in inline:
            fd, path = tempfile.mkstemp(dir=b.store.tmp_dir, prefix="heredoc-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(item.content)
            os.chmod(path, 0o644)
            temp.append(Path(path))
            sources.append(copier.Source(Path(path), item.name, False, mtime=b.epoch or time.time()))
        fetched = []
        for src in sources:
            if src.url:
                copier.fetch_url(src, b.store.tmp_dir, step.checksum)
                temp.append(src.path)
                fetched.append(src)
        source_excluded = Matcher(list(step.excludes)) if step.excludes else None
        if source_excluded is not None:
            sources = [s for s in sources if s.is_dir or not source_excluded(os.path.basename(s.rel))]

        def key() -> Mapping[str, object]:
            local = [s for s in from_context if not s.url and s in sources]
            return {**fields_of(step), "inline": [(i.name, i.content) for i in inline],
                    "context": context_digest(local, excluded, source_excluded, b.file_digests),
                    "urls": [(s.url, entry_record(s.rel, s.path, os.lstat(s.path), None)) for s in fetched]}

        def run() -> Streamed | None:
            c = b.container(st)
            dest = absolute_dest(c, step.dest)
            if step.parents:
                for s in sources:
                    sub = os.path.dirname(s.rel) if not s.is_dir else s.rel
                    d = dest.rstrip("/") + "/" + sub if sub not in ("", ".") else dest
                    plan = copier.plan_copy([s], d.rstrip("/") + "/", "dir", chmod=step.chmod, excluded=excluded)
                    plan.source_excluded = source_excluded
                    copy_plan_into(b.ws, b.rt, c, plan, step.chown)
                return None
            plan = copier.plan_copy(sources, dest, container_path_kind(b.rt, c, dest), chmod=step.chmod,
                                    excluded=excluded)
            plan.source_excluded = source_excluded
            if b.last_use(st, step):  # nothing reads the copy but its layer: written from the sources
                try:
                    layer = copy_plan_layer(b.ws, b.rt, c, plan, step.chown, compression=b.opts.compression,
                                            level=b.opts.compression_level, image_format=b.opts.image_format,
                                            epoch=b.epoch)
                    log.debug("COPY layer written from the sources")
                    return Streamed(layer)
                except NotStreamable as exc:
                    log.debug("COPY into the snapshot: %s", exc)
            copy_plan_into(b.ws, b.rt, c, plan, step.chown)
            return None

        b.fs_step(st, step.keyword, step.text, key, run)
    finally:
        for p in temp:
            p.unlink(missing_ok=True)
