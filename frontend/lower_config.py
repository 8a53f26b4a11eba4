"""The instructions that edit the image configuration: ENV, LABEL, CMD,
ENTRYPOINT, WORKDIR, USER, EXPOSE, VOLUME, SHELL, STOPSIGNAL, HEALTHCHECK,
ONBUILD, MAINTAINER. Each becomes one typed operation (``frontend.steps.ConfigOp``);
WORKDIR is a step of its own since it also creates its directory."""
from __future__ import annotations

import json
import posixpath
import re

from frontend.lowering import Lowering, Parser, StageCtx
from frontend.signals import parse_signal
from frontend.source import RawInstruction
from frontend.steps import (AddOnBuild, AddVolumes, ConfigOp, ConfigStep, Expose, SetAuthor, SetCmd, SetEntrypoint,
                            SetEnv, SetHealthcheck, SetLabels, SetShell, SetStopSignal, SetUser, Stage, WorkdirStep)

HEALTHCHECK_FLAGS = frozenset({"interval", "timeout", "start-period", "start-interval", "retries"})
#: what may not follow ONBUILD (BuildKit's instructions.parseOnBuild)
NOT_TRIGGERS = ("ONBUILD", "FROM", "MAINTAINER")


def _step(low: Lowering, inst: RawInstruction, text: str, op: ConfigOp) -> ConfigStep:
    return ConfigStep(span=low.span(inst), keyword=inst.keyword, text=text, op=op)


def kv_pairs(low: Lowering, inst: RawInstruction, env: dict[str, str], allow_old_form: bool) -> list[tuple[str, str]]:
    words = low.split(inst, inst.args)
    if not words:
        raise low.err(inst, "missing KEY=VALUE")
    if "=" not in words[0]:
        if not allow_old_form:
            raise low.err(inst, f"expected KEY=VALUE, got {words[0]!r}")
        if len(words) < 2:
            raise low.err(inst, "ENV needs a value")
        key = words[0]
        value = inst.args.strip()[len(key):].strip()
        return [(key, low.expand(inst, value, env))]
    out = []
    for w in words:
        k, sep, v = w.partition("=")
        if not sep or not k:
            raise low.err(inst, f"expected KEY=VALUE, got {w!r}")
        out.append((low.expand(inst, k, env), low.expand(inst, v, env)))
    return out


def lower_env(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> ConfigStep:
    pairs = kv_pairs(low, inst, ctx.expansion_env(), allow_old_form=True)
    for k, v in pairs:
        ctx.env[k] = v
    return _step(low, inst, "ENV " + " ".join(f"{k}={v}" for k, v in pairs), SetEnv(tuple(pairs)))


def lower_label(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> ConfigStep:
    pairs = kv_pairs(low, inst, ctx.expansion_env(), allow_old_form=False)
    return _step(low, inst, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs), SetLabels(tuple(pairs)))


def lower_command(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> ConfigStep:
    """CMD and ENTRYPOINT; an ENTRYPOINT before any CMD of the stage drops the base's CMD."""
    kw = inst.keyword
    if not inst.args:
        raise low.err(inst, "missing command")
    cmd = low.json_or_none(inst, inst.args)
    value = tuple(cmd if cmd is not None else ctx.shell + [inst.args])
    text = f"{kw} {json.dumps(list(value))}"
    if kw == "CMD":
        ctx.cmd_set = True
        return _step(low, inst, text, SetCmd(value))
    return _step(low, inst, text, SetEntrypoint(value, reset_cmd=not ctx.cmd_set))


def lower_workdir(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> WorkdirStep:
    path = low.expand(inst, inst.args, ctx.expansion_env())
    if not path:
        raise low.err(inst, "missing path")
    new = posixpath.normpath(posixpath.join(ctx.workdir, path))
    ctx.workdir = new
    return WorkdirStep(span=low.span(inst), keyword="WORKDIR", text=f"WORKDIR {new}", path=new)


def lower_user(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> ConfigStep:
    user = low.expand(inst, inst.args, ctx.expansion_env())
    if not user:
        raise low.err(inst, "missing user")
    return _step(low, inst, f"USER {user}", SetUser(user))


def lower_expose(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> ConfigStep:
    ports = low.expand_list(inst, inst.args, ctx.expansion_env())
    for p in ports:
        if not re.fullmatch(r"\d+(-\d+)?(/(tcp|udp|sctp))?", p):
            raise low.err(inst, f"invalid port {p!r}")
    return _step(low, inst, "EXPOSE " + " ".join(ports), Expose(tuple(ports)))


def lower_volume(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> ConfigStep:
    env = ctx.expansion_env()
    vols = low.json_or_none(inst, inst.args)
    vols = [low.expand(inst, v, env) for v in vols] if vols is not None else low.expand_list(inst, inst.args, env)
    if not vols or any(not v for v in vols):
        raise low.err(inst, "missing volume path")
    return _step(low, inst, f"VOLUME {json.dumps(vols)}", AddVolumes(tuple(vols)))


def lower_shell(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> ConfigStep:
    sh = low.json_or_none(inst, inst.args)
    if not sh:
        raise low.err(inst, "expected a JSON array, e.g. SHELL [\"/bin/bash\", \"-c\"]")
    ctx.shell = sh
    return _step(low, inst, f"SHELL {json.dumps(sh)}", SetShell(tuple(sh)))


def lower_stopsignal(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> ConfigStep:
    """The rest of the line as one string (parser.go parseString, instructions/parse.go
    parseStopSignal), expanded, checked by moby/sys/signal ParseSignal (dockerfile2llb/convert.go
    dispatchStopSignal: a build error) and kept as written: ``term`` stays ``term``."""
    if not inst.args.strip():
        raise low.err(inst, "STOPSIGNAL requires exactly one argument")
    sig = low.expand(inst, inst.args, ctx.expansion_env())
    cause = parse_signal(sig)
    if cause:
        raise low.fail(inst, cause)
    return _step(low, inst, f"STOPSIGNAL {sig}", SetStopSignal(sig))


def lower_onbuild(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> ConfigStep:
    trig = inst.args.strip() + "".join("\n" + h.raw_body + h.name for h in inst.heredocs)  # parse.go:452-462
    first = trig.split(None, 1)[0].upper() if trig else ""
    if first in NOT_TRIGGERS or first not in low.known:
        raise low.err(inst, f"{first or 'empty'} is not allowed as an ONBUILD trigger")
    ctx.onbuild.append(trig)
    return _step(low, inst, f"ONBUILD {trig}", AddOnBuild(trig))


def lower_maintainer(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> ConfigStep:
    return _step(low, inst, f"MAINTAINER {inst.args}", SetAuthor(inst.args))


def lower_healthcheck(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> ConfigStep:
    flags, rest = low.flags(inst, inst.args, HEALTHCHECK_FLAGS)
    if rest.upper() == "NONE":
        if flags:
            raise low.err(inst, "HEALTHCHECK NONE takes no options")
        return _step(low, inst, "HEALTHCHECK NONE", SetHealthcheck(("NONE",)))
    first, _, cmd = rest.partition(" ")
    if first.upper() != "CMD" or not cmd.strip():
        raise low.err(inst, "expected HEALTHCHECK [OPTIONS] CMD command, or NONE")
    exec_form = low.json_or_none(inst, cmd)
    test = ["CMD"] + exec_form if exec_form is not None else ["CMD-SHELL", cmd.strip()]
    durations: dict[str, int] = {}
    for flag in ("interval", "timeout", "start-period", "start-interval"):
        if flag in flags:
            durations[flag] = _duration(low, inst, flags[flag][0])
    retries = None
    if "retries" in flags:
        try:
            retries = int(flags["retries"][0])
            if retries < 0 or retries >= 2**31 or not re.fullmatch(r"[+-]?[0-9]+", flags["retries"][0]):
                raise ValueError  # parse.go:663 strconv.ParseInt(v, 10, 32), not negative
        except ValueError:
            raise low.err(inst, f"invalid --retries {flags['retries'][0]!r}") from None
    op = SetHealthcheck(tuple(test), durations.get("interval"), durations.get("timeout"),
                        durations.get("start-period"), durations.get("start-interval"), retries)
    shown: dict[str, object] = {"Test": test}
    for key, value in (("Interval", op.interval), ("Timeout", op.timeout), ("StartPeriod", op.start_period),
                       ("StartInterval", op.start_interval), ("Retries", op.retries)):
        if value is not None:
            shown[key] = value
    return _step(low, inst, f"HEALTHCHECK {json.dumps(shown, sort_keys=True)}", op)


_DUR = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_NS = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def _duration(low: Lowering, inst: RawInstruction, text: str) -> int:
    """A Go duration (``1m30s``, ``500ms``) in nanoseconds."""
    pos, total = 0, 0.0
    for m in _DUR.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text or not total < 2**63:  # Go's time.ParseDuration: int64 nanoseconds
        raise low.err(inst, f"invalid duration {text!r}")
    return int(total)


PARSERS: dict[str, Parser] = {
    "ENV": lower_env, "LABEL": lower_label, "CMD": lower_command, "ENTRYPOINT": lower_command,
    "WORKDIR": lower_workdir, "USER": lower_user, "EXPOSE": lower_expose, "VOLUME": lower_volume,
    "SHELL": lower_shell, "STOPSIGNAL": lower_stopsignal, "HEALTHCHECK": lower_healthcheck,
    "ONBUILD": lower_onbuild, "MAINTAINER": lower_maintainer,
}
