"""Config steps (ENV, LABEL, CMD, ENTRYPOINT, SHELL, EXPOSE, VOLUME, USER,
HEALTHCHECK, ONBUILD, STOPSIGNAL, MAINTAINER): one typed operation applied to
the image configuration, a history entry, no layer. ``apply`` holds each
operation's merge rule (Docker's): ENV keeps an existing key's position,
LABEL and EXPOSE and VOLUME merge, ONBUILD appends, the rest replace."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_never

from builder.build.state import StageState
from builder.image import configedit as ce
from builder.image.oci import ImageConfig
from frontend.steps import (AddOnBuild, AddVolumes, ConfigOp, ConfigStep, Expose, SetAuthor, SetCmd, SetEntrypoint,
                            SetEnv, SetHealthcheck, SetLabels, SetShell, SetStopSignal, SetUser)

if TYPE_CHECKING:
    from builder.build.builder import Builder


def apply(cfg: ImageConfig, op: ConfigOp) -> None:
    """Apply ``op`` to ``cfg`` (its ``config`` dict in Docker's spelling, ``author`` at the top)."""
    c = cfg.config
    match op:
        case SetEnv(pairs):
            for name, text in pairs:
                ce.set_env(c, name, text)
        case SetLabels(pairs):
            c["Labels"] = {**(c.get("Labels") or {}), **dict(pairs)}
        case SetCmd(argv):
            c["Cmd"] = list(argv)
        case SetEntrypoint(argv, reset_cmd):
            c["Entrypoint"] = list(argv)
            if reset_cmd:
                c.pop("Cmd", None)
        case SetShell(argv):
            c["Shell"] = list(argv)
        case Expose(ports):
            for p in ports:
                ce.add_port(c, p)
        case AddVolumes(paths):
            for path in paths:
                ce.add_volume(c, path)
        case SetUser(user):
            c["User"] = user
        case SetHealthcheck():
            hc: dict[str, Any] = {"Test": list(op.test)}
            for field, value in (("Interval", op.interval), ("Timeout", op.timeout),
                                 ("StartPeriod", op.start_period), ("StartInterval", op.start_interval),
                                 ("Retries", op.retries)):
                if value is not None:
                    hc[field] = value
            c["Healthcheck"] = hc
        case AddOnBuild(trigger):
            c["OnBuild"] = list(c.get("OnBuild") or []) + [trigger]
        case SetStopSignal(signal):
            c["StopSignal"] = signal
        case SetAuthor(author):
            cfg.author = author
        case _:
            assert_never(op)


def execute(b: "Builder", st: StageState, step: ConfigStep) -> None:
    apply(st.cfg, step.op)
    b.history(st, step.text, True)
