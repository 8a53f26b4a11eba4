"""RUN: a process in the stage's snapshot, with its mounts; its changes become a layer.

Cache key: the parent filesystem, argv, the environment the process gets (the
image's Env, the build args it sees), USER and WORKDIR, network and security
mode, a heredoc script's name and body, each mount's options and a digest of what each bind
mount exposes. Nothing else: a LABEL before it does not invalidate it."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Mapping

from builder.build.mounts import build_mounts, mount_digests
from builder.build.state import StageState
from builder.errors import BuildError
from builder.scripted import parse_volume, process_spec, run_process
from frontend.lower_run import mount_key
from frontend.steps import RunStep

if TYPE_CHECKING:
    from builder.build.builder import Builder

log = logging.getLogger("bale")


def _short(args: tuple[str, ...]) -> str:
    text = args[-1] if len(args) >= 3 and args[-2] == "-c" else " ".join(args)
    text = text.replace("\n", "; ")
    return text if len(text) < 120 else text[:117] + "..."


def key_fields(b: "Builder", st: StageState, step: RunStep) -> Mapping[str, object]:
    c = st.cfg.config
    return {"args": step.args, "env": c.get("Env") or [], "build_env": sorted(step.build_env.items()),
            "user": c.get("User") or "", "workdir": c.get("WorkingDir") or "",
            "network": step.network or b.opts.network, "security": step.security,
            "script": [step.script.name, step.script.content.hex()] if step.script else None,
            "mounts": [mount_key(m) for m in step.mounts], "mount_digests": mount_digests(b, step)}


def execute(b: "Builder", st: StageState, step: RunStep) -> None:
    def run() -> None:
        c = b.container(st)
        c.config = st.cfg.to_json()
        mounts = build_mounts(b, st, step)  # holds its cache mounts until the process ends
        try:
            env = [f"{k}={v}" for k, v in step.build_env.items()] + mounts.env
            spec = process_spec(c, list(step.args), env=env, network=step.network or b.opts.network,
                                mounts=mounts.binds + [parse_volume(v) for v in b.opts.volumes],
                                stdin_data=b"")
            spec.extra_hosts = list(b.opts.add_hosts)
            if step.script is not None:
                spec.pipes = {step.script.name: step.script.content}
            t0 = time.monotonic()
            status = run_process(b.ws, c, spec, b.rt, mounts.extra)
        finally:
            mounts.release()
        if status != 0:
            raise BuildError(f"{_short(step.args)}: exited with status {status}" if status < 128 else
                             f"{_short(step.args)}: killed by signal {status - 128}")
        log.debug("RUN took %.2fs", time.monotonic() - t0)

    b.fs_step(st, "RUN", step.text, lambda: key_fields(b, st, step), run)
