"""WORKDIR: set the working directory and create it if missing (a layer only
when something was created). Its cache key is the parent filesystem and the
path (and USER, which owns what WORKDIR creates in BuildKit)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from builder.build.state import StageState
from builder.workspace import snapshots
from frontend.steps import WorkdirStep

if TYPE_CHECKING:
    from builder.build.builder import Builder


def execute(b: "Builder", st: StageState, step: WorkdirStep) -> None:
    st.cfg.config["WorkingDir"] = step.path

    def mkdir() -> None:
        c = b.container(st)
        b.rt.call(snapshots.make_dirs, str(b.rt.snapshots_root), c.driver, c.key, step.path, None,
                  st.cfg.config.get("User") or None)

    b.fs_step(st, "WORKDIR", step.text, lambda: {"path": step.path, "user": st.cfg.config.get("User") or ""},
              mkdir)
