"""RUN: exec and shell forms, heredoc scripts, ``--mount``, ``--network``, ``--security``."""
from __future__ import annotations

import json
import posixpath

from frontend.heredoc import heredoc_file_name, must_parse_heredoc
from frontend.lowering import Lowering, Parser, StageCtx
from frontend.source import RawInstruction
from frontend.steps import InlineFile, RunMount, RunStep, Stage

FLAGS = frozenset({"mount", "network", "security"})


def lower_run(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> RunStep:
    env = ctx.expansion_env()
    flags, rest = low.flags(inst, inst.args, FLAGS)
    if not rest:
        raise low.err(inst, "missing command")
    mounts = tuple(parse_mount(low, st, inst, m, env, ctx.workdir) for m in flags.get("mount", []))
    network = flags.get("network", [None])[0]
    if network not in (None, "default", "none", "host"):
        raise low.err(inst, f"invalid --network {network!r}")
    security = flags.get("security", ["sandbox"])[0]
    if security not in ("sandbox", "insecure"):
        raise low.err(inst, f"invalid --security {security!r}")
    script = None
    exec_form = low.json_or_none(inst, rest)
    if exec_form is not None:
        if not exec_form:
            raise low.err(inst, "empty exec form")
        args = exec_form
    elif inst.heredocs and must_parse_heredoc(rest) is not None:  # convert.go:1358
        h = inst.heredocs[0]
        if h.body.startswith("#!"):
            # convert.go:1365-1382: the body is a file of a scratch state (mode 0755) mounted
            # read-only on /dev/pipes; the shell runs path.Join("/dev/pipes/", NAME), so the kernel
            # reads the #! line, $0 is that path and stdin stays the RUN's own
            try:
                script = InlineFile(heredoc_file_name(h.name), h.body.encode())
            except ValueError as exc:
                raise low.err(inst, f"heredoc <<{h.name}: {exc}") from None
            args = ctx.shell + [posixpath.normpath("/dev/pipes/" + h.name)]
        else:
            args = ctx.shell + [h.body]
    elif inst.heredocs:
        args = ctx.shell + [rest + "".join("\n" + h.raw_body + h.name for h in inst.heredocs)]  # convert.go:1395
    else:
        args = ctx.shell + [rest]
    run_env = low.run_env(ctx)
    mount_text = " ".join(f"--mount={mount_key(m)}" for m in mounts)
    text = "RUN " + (mount_text + " " if mount_text else "") + \
        (f"--network={network} " if network else "") + json.dumps(args)
    if run_env:
        text += " |" + " ".join(f"{k}={v}" for k, v in sorted(run_env.items()))
    return RunStep(span=low.span(inst), keyword="RUN", text=text, args=tuple(args), build_env=run_env,
                   mounts=mounts, network=None if network == "default" else network, security=security,
                   script=script)


def mount_key(m: RunMount) -> str:
    """The mount as text (a secret's id only, never its value)."""
    bits = [f"type={m.type}", f"target={m.target}"]
    if m.type == "secret":
        return ",".join(bits + [f"id={m.id}"] + ([f"env={m.env}"] if m.env else []))
    for k in ("source", "id", "sharing", "size"):
        v = getattr(m, k)
        if v and not (k == "sharing" and v == "shared"):
            bits.append(f"{k}={v}")
    if m.from_stage is not None:
        bits.append(f"from=stage{m.from_stage}")
    if m.from_image:
        bits.append(f"from={m.from_image}")
    if not m.readonly and m.type == "bind":
        bits.append("rw")
    for k in ("mode", "uid", "gid"):
        v = getattr(m, k)
        if v is not None:
            bits.append(f"{k}={v:o}" if k == "mode" else f"{k}={v}")
    return ",".join(bits)


def parse_mount(low: Lowering, st: Stage, inst: RawInstruction, text: str, env: dict[str, str],
                workdir: str) -> RunMount:
    fields: dict[str, str] = {}
    for part in low.expand(inst, text, env).split(","):
        k, sep, v = part.partition("=")
        fields[k.strip().lower()] = v if sep else "true"
    typ = fields.pop("type", "bind")
    if typ not in ("bind", "cache", "tmpfs", "secret", "ssh"):
        raise low.err(inst, f"unknown mount type {typ!r}")
    target = fields.pop("target", None) or fields.pop("dst", None) or fields.pop("destination", None) or ""
    if typ == "secret":
        sid = fields.get("id") or posixpath.basename(target)
        if not sid:
            raise low.err(inst, "secret mount needs id= or target=")
        if not target and not fields.get("env"):
            target = f"/run/secrets/{sid}"
    elif typ == "ssh":
        target = target or "/run/buildkit/ssh_agent.0"
    elif not target:
        raise low.err(inst, f"{typ} mount needs target=")
    if target and not target.startswith("/"):
        target = posixpath.join(workdir, target)
    from_stage, from_image = None, None
    if "from" in fields:
        from_stage, from_image = low.stage_ref(inst, st, fields.pop("from"))
    readonly = typ == "bind"
    if "rw" in fields or "readwrite" in fields:
        readonly = False
    if "ro" in fields or "readonly" in fields:
        readonly = fields.get("ro", fields.get("readonly")) != "false"

    def num(key: str, base: int = 10) -> int | None:
        if key not in fields:
            return None
        try:
            v = int(fields[key], base)
            if not (fields[key].isascii() and fields[key].isdigit()) or v >= 2**32:
                raise ValueError  # commands_runmount.go:241-253 strconv.ParseUint(v, base, 32)
            return v
        except ValueError:
            raise low.err(inst, f"invalid {key}={fields[key]!r}") from None
    sharing = fields.get("sharing", "shared")
    if sharing not in ("shared", "private", "locked"):
        raise low.err(inst, f"invalid sharing={sharing!r}")
    return RunMount(typ, target, fields.get("source", fields.get("src", "")), from_stage, from_image, readonly,
                    fields.get("id", ""), sharing, num("mode", 8), num("uid"), num("gid"),
                    fields.get("required", "false") == "true", fields.get("env"), fields.get("size", ""))


PARSERS: dict[str, Parser] = {"RUN": lower_run}
