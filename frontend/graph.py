"""Dockerfile → StepGraph: stages, ARG scoping, word expansion and one typed
step per instruction. Only the stages the target needs are lowered (a broken
stage nobody needs does not break the build), but the whole file is parsed.
Knows nothing of sandboxes or stores: base images are described by a
``resolve_base(ref, platform) -> BaseInfo`` callback."""
from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Callable

from frontend.errors import FrontendError
from frontend.expand import ExpandError, expand_word, expand_words, split_raw
from frontend.heredoc import must_parse_heredoc
from frontend.source import RawInstruction, Source, parse_source
from frontend.steps import (BaseInfo, ConfigStep, CopyStep, InlineFile, RunMount, RunStep, Stage, Step,
                            StepGraph)

DEFAULT_SHELL = ["/bin/sh", "-c"]
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY",
              "no_proxy", "ALL_PROXY", "all_proxy")
PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "BUILDPLATFORM", "BUILDOS",
                 "BUILDARCH", "BUILDVARIANT")
KNOWN = {"FROM", "RUN", "CMD", "ENTRYPOINT", "ENV", "ARG", "LABEL", "EXPOSE", "VOLUME", "USER", "WORKDIR", "SHELL",
         "STOPSIGNAL", "HEALTHCHECK", "ONBUILD", "MAINTAINER", "COPY", "ADD"}
FLAGS = {"FROM": {"platform"}, "RUN": {"mount", "network", "security"},
         "COPY": {"from", "chown", "chmod", "link", "exclude", "parents"},
         "ADD": {"chown", "chmod", "link", "exclude", "checksum", "keep-git-dir", "from"},
         "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"}}
REPEATABLE = {"mount", "exclude"}
BOOL_FLAGS = {"link", "parents", "keep-git-dir"}

Resolver = Callable[[str, "str | None"], BaseInfo]


def platform_args(target: str, build: str) -> dict[str, str]:
    def parts(p: str, prefix: str) -> dict[str, str]:
        bits = p.split("/")
        return {f"{prefix}PLATFORM": p, f"{prefix}OS": bits[0], f"{prefix}ARCH": bits[1] if len(bits) > 1 else "",
                f"{prefix}VARIANT": bits[2] if len(bits) > 2 else ""}
    return {**parts(target, "TARGET"), **parts(build, "BUILD")}


def parse_build_arg_file(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v
    return out


@dataclass
class _Ctx:
    """Lowering state of one stage."""

    env: dict[str, str]  # ENV (persisted)
    args: dict[str, str]  # ARGs declared in the stage, with values
    shell: list[str]
    workdir: str
    cmd_set: bool = False
    used_args: set[str] = field(default_factory=set)

    def expansion_env(self) -> dict[str, str]:
        return {**self.args, **self.env}


class _Lowerer:
    def __init__(self, source: Source, build_args: dict[str, str], target_platform: str, build_platform: str,
                 resolve_base: Resolver | None) -> None:
        self.src, self.build_args = source, dict(build_args)
        self.escape = source.escape
        self.resolve_base = resolve_base
        self.auto_args = platform_args(target_platform, build_platform)
        self.target_platform = target_platform
        self.used: set[str] = set()

    def err(self, inst: RawInstruction, cause: str) -> FrontendError:
        return FrontendError(cause, filename=self.src.filename, line=inst.line, instruction=inst.keyword)

    def expand(self, inst: RawInstruction, text: str, env: dict[str, str]) -> str:
        try:
            return expand_word(text, env, self.escape)
        except ExpandError as exc:
            raise self.err(inst, str(exc)) from None

    def expand_list(self, inst: RawInstruction, text: str, env: dict[str, str]) -> list[str]:
        try:
            return expand_words(text, env, self.escape)
        except ExpandError as exc:
            raise self.err(inst, str(exc)) from None

    # --- flags ---
    def flags(self, inst: RawInstruction, text: str) -> tuple[dict[str, list[str]], str]:
        allowed = FLAGS.get(inst.keyword, set())
        found: dict[str, list[str]] = {}
        rest = text
        while True:
            m = re.match(r"--([a-zA-Z][a-zA-Z0-9-]*)(?:=((?:\"[^\"]*\"|'[^']*'|[^\s])*))?(\s+|$)", rest)
            if not m:
                break
            name, value = m.group(1), m.group(2)
            if name not in allowed:
                raise self.err(inst, f"unknown flag --{name}")
            if value is None:
                if name not in BOOL_FLAGS:
                    raise self.err(inst, f"flag --{name} needs a value")
                value = "true"
            if name in found and name not in REPEATABLE:
                raise self.err(inst, f"flag --{name} given twice")
            found.setdefault(name, []).append(value)
            rest = rest[m.end():]
        return found, rest.strip()

    def json_or_none(self, inst: RawInstruction, text: str) -> list[str] | None:
        t = text.strip()
        if not t.startswith("["):
            return None
        try:
            v = json.loads(t)
        except ValueError:
            return None  # Docker treats invalid JSON as shell form
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.err(inst, "expected a JSON array of strings")
        return v

    # --- entry ---
    def lower(self, target: str | None) -> StepGraph:
        insts = self.src.instructions
        for inst in insts:
            if inst.keyword not in KNOWN:
                raise self.err(inst, "unknown instruction")
        meta: dict[str, str] = dict(self.auto_args)
        stages_raw: list[tuple[RawInstruction, list[RawInstruction]]] = []
        for inst in insts:
            if inst.keyword == "FROM":
                stages_raw.append((inst, []))
            elif not stages_raw:
                if inst.keyword != "ARG":
                    raise self.err(inst, "only ARG may come before the first FROM")
                for name, default in self.arg_decls(inst, meta):
                    value = self.build_args.get(name, default if default is not None else meta.get(name))
                    self.used.add(name)
                    if value is not None:
                        meta[name] = value
                    else:
                        meta.pop(name, None)
            else:
                stages_raw[-1][1].append(inst)
        if not stages_raw:
            raise FrontendError("no FROM instruction", filename=self.src.filename)
        self.meta = meta
        heads: list[Stage] = []
        names: dict[str, int] = {}
        for idx, (frm, _) in enumerate(stages_raw):
            flags, rest = self.flags(frm, frm.args)
            words = self.expand_list(frm, rest, meta)
            if len(words) == 3 and words[1].lower() == "as":
                name = words[2].lower()
                if not re.fullmatch(r"[a-z][a-z0-9-_.]*", name):
                    raise self.err(frm, f"invalid stage name {words[2]!r}")
                if name in names:
                    raise self.err(frm, f"duplicate stage name {name!r}")
            elif len(words) == 1:
                name = None
            else:
                raise self.err(frm, "expected FROM [--platform=P] IMAGE [AS NAME]")
            base = words[0]
            if not base:
                raise self.err(frm, "empty base image (an ARG without value?)")
            platform = self.expand(frm, flags["platform"][0], meta) if "platform" in flags else None
            base_stage = names.get(base.lower())
            if base_stage is None and base.isdigit() and int(base) < idx:
                base_stage = None  # FROM <index> is not allowed by Docker: an image named "0"
            st = Stage(idx, name, frm.line, None if base_stage is not None or base == "scratch" else base,
                       base_stage, platform)
            if base_stage is not None:
                st.deps.add(base_stage)
            heads.append(st)
            if name:
                names[name] = idx
        self.names = names
        if target is None:
            tidx = len(heads) - 1
        else:
            if target.lower() not in names:
                raise FrontendError(f"target stage {target!r} not found", filename=self.src.filename)
            tidx = names[target.lower()]
        needed: dict[int, Stage] = {}
        self.stage_ctx_end: dict[int, BaseInfo] = {}

        def visit(i: int) -> None:
            if i in needed:
                return
            st = heads[i]
            if st.base_stage is not None:
                visit(st.base_stage)  # its final ENV/WORKDIR/SHELL are this stage's start
            needed[i] = st
            self.lower_stage(st, stages_raw[i][1], stages_raw[i][0])
            for d in sorted(st.deps):
                visit(d)
        visit(tidx)
        graph = StepGraph(needed, tidx)
        unused = sorted(k for k in self.build_args if k not in self.used and k not in PROXY_ARGS)
        if unused:
            graph.warnings.append(f"one or more build-args {unused} were not consumed")
        return graph

    def arg_decls(self, inst: RawInstruction, env: dict[str, str]) -> list[tuple[str, str | None]]:
        out = []
        try:
            words = split_raw(inst.args, self.escape)
        except ExpandError as exc:
            raise self.err(inst, str(exc)) from None
        if not words:
            raise self.err(inst, "expected ARG NAME[=DEFAULT]")
        for w in words:
            name, sep, default = w.partition("=")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise self.err(inst, f"invalid argument name {name!r}")
            out.append((name, self.expand(inst, default, env) if sep else None))
        return out

    # --- stages ---
    def lower_stage(self, st: Stage, body: list[RawInstruction], frm: RawInstruction) -> None:
        info = BaseInfo()
        if st.base_stage is not None:
            info = self.stage_ctx_end.get(st.base_stage) or BaseInfo()
        elif st.base_image is not None and self.resolve_base is not None:
            try:
                info = self.resolve_base(st.base_image, st.platform)
            except FrontendError:
                raise
            except Exception as exc:  # the executor's error (missing image...) with our location
                err = FrontendError(str(exc), filename=self.src.filename, line=frm.line, instruction="FROM")
                err.exit_code = getattr(exc, "exit_code", 1)  # a build failure, not a usage error
                raise err from None
        env = dict(e.partition("=")[::2] for e in info.env)
        ctx = _Ctx(env, {}, list(info.shell or DEFAULT_SHELL), info.workdir or "/")
        triggers = []
        for trig in info.onbuild:
            parsed = parse_source(trig + "\n", self.src.filename).instructions
            for t in parsed:
                if t.keyword in ("ONBUILD", "FROM", "MAINTAINER"):
                    raise self.err(frm, f"{t.keyword} is not allowed as an ONBUILD trigger")
                t.line = frm.line
                triggers.append(t)
        for inst in triggers + body:
            step = self.lower_inst(st, ctx, inst)
            if step is not None:
                st.steps.append(step)
        self.stage_ctx_end[st.index] = BaseInfo([f"{k}={v}" for k, v in ctx.env.items()], ctx.workdir, ctx.shell, [])

    def stage_ref(self, inst: RawInstruction, st: Stage, ref: str) -> tuple[int | None, str | None]:
        """--from value: a stage name or index (a dependency), else an image."""
        low = ref.lower()
        if low in self.names:
            idx = self.names[low]
        elif ref.isdigit():
            idx = int(ref)
            if idx >= st.index:
                raise self.err(inst, f"stage index {ref} does not precede this stage")
        else:
            return None, ref
        if idx == st.index:
            raise self.err(inst, "a stage cannot copy from itself")
        st.deps.add(idx)
        return idx, None

    def run_env(self, ctx: _Ctx) -> dict[str, str]:
        """Build args visible to RUN: declared ARGs not shadowed by ENV, plus proxy args given."""
        env = {k: v for k, v in ctx.args.items() if k not in ctx.env}
        for k in PROXY_ARGS:
            if k in self.build_args:
                env[k] = self.build_args[k]
                self.used.add(k)
        return env

    def lower_inst(self, st: Stage, ctx: _Ctx, inst: RawInstruction) -> Step | None:
        kw = inst.keyword
        env = ctx.expansion_env()
        if kw == "FROM":
            raise self.err(inst, "FROM inside a stage")
        if kw == "ARG":
            for name, default in self.arg_decls(inst, env):
                self.used.add(name)
                if name in self.build_args:
                    value: str | None = self.build_args[name]
                elif default is not None:
                    value = default
                elif name in self.meta:
                    value = self.meta[name]
                else:
                    value = None
                if value is not None:
                    ctx.args[name] = value
            return None
        if kw in ("ENV", "LABEL"):
            pairs = self.kv_pairs(inst, env, allow_old_form=kw == "ENV")
            if kw == "ENV":
                for k, v in pairs:
                    ctx.env[k] = v
                return ConfigStep(inst.line, kw, "ENV " + " ".join(f"{k}={v}" for k, v in pairs),
                                  {"Env": [f"{k}={v}" for k, v in pairs]})
            return ConfigStep(inst.line, kw, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs),
                              {"Labels": dict(pairs)})
        if kw == "RUN":
            return self.lower_run(st, ctx, inst, env)
        if kw in ("COPY", "ADD"):
            return self.lower_copy(st, ctx, inst, env)
        if kw in ("CMD", "ENTRYPOINT"):
            if not inst.args:
                raise self.err(inst, "missing command")
            cmd = self.json_or_none(inst, inst.args)
            value = cmd if cmd is not None else ctx.shell + [inst.args]
            changes: dict = {"Cmd" if kw == "CMD" else "Entrypoint": value}
            if kw == "CMD":
                ctx.cmd_set = True
            elif not ctx.cmd_set:
                changes["Cmd"] = None  # ENTRYPOINT resets the base image's CMD
            return ConfigStep(inst.line, kw, f"{kw} {json.dumps(value)}", changes)
        if kw == "WORKDIR":
            path = self.expand(inst, inst.args, env)
            if not path:
                raise self.err(inst, "missing path")
            new = posixpath.normpath(posixpath.join(ctx.workdir, path))
            ctx.workdir = new
            return ConfigStep(inst.line, kw, f"WORKDIR {new}", {"WorkingDir": new}, mkdir=new)
        if kw == "USER":
            user = self.expand(inst, inst.args, env)
            if not user:
                raise self.err(inst, "missing user")
            return ConfigStep(inst.line, kw, f"USER {user}", {"User": user})
        if kw == "EXPOSE":
            ports = self.expand_list(inst, inst.args, env)
            for p in ports:
                if not re.fullmatch(r"\d+(-\d+)?(/(tcp|udp|sctp))?", p):
                    raise self.err(inst, f"invalid port {p!r}")
            return ConfigStep(inst.line, kw, "EXPOSE " + " ".join(ports), {"ExposedPorts": ports})
        if kw == "VOLUME":
            vols = self.json_or_none(inst, inst.args)
            vols = [self.expand(inst, v, env) for v in vols] if vols is not None else \
                self.expand_list(inst, inst.args, env)
            if not vols or any(not v for v in vols):
                raise self.err(inst, "missing volume path")
            return ConfigStep(inst.line, kw, f"VOLUME {json.dumps(vols)}", {"Volumes": vols})
        if kw == "SHELL":
            sh = self.json_or_none(inst, inst.args)
            if not sh:
                raise self.err(inst, "expected a JSON array, e.g. SHELL [\"/bin/bash\", \"-c\"]")
            ctx.shell = sh
            return ConfigStep(inst.line, kw, f"SHELL {json.dumps(sh)}", {"Shell": sh})
        if kw == "STOPSIGNAL":
            sig = self.expand(inst, inst.args, env)
            if not re.fullmatch(r"\d+|(SIG)?[A-Z0-9+-]+", sig.upper() if sig else ""):
                raise self.err(inst, f"invalid signal {sig!r}")
            sig = sig.upper() if sig.isdigit() or sig.upper().startswith("SIG") else "SIG" + sig.upper()
            return ConfigStep(inst.line, kw, f"STOPSIGNAL {sig}", {"StopSignal": sig})
        if kw == "HEALTHCHECK":
            return self.lower_healthcheck(ctx, inst)
        if kw == "ONBUILD":
            trig = inst.args.strip()
            first = trig.split(None, 1)[0].upper() if trig else ""
            if first in ("ONBUILD", "FROM", "MAINTAINER") or first not in KNOWN:
                raise self.err(inst, f"{first or 'empty'} is not allowed as an ONBUILD trigger")
            return ConfigStep(inst.line, kw, f"ONBUILD {trig}", {"OnBuild": [trig]})
        if kw == "MAINTAINER":
            return ConfigStep(inst.line, kw, f"MAINTAINER {inst.args}", {"Author": inst.args})
        raise self.err(inst, "unknown instruction")  # pragma: no cover

    def kv_pairs(self, inst: RawInstruction, env: dict[str, str], allow_old_form: bool) -> list[tuple[str, str]]:
        try:
            words = split_raw(inst.args, self.escape)
        except ExpandError as exc:
            raise self.err(inst, str(exc)) from None
        if not words:
            raise self.err(inst, "missing KEY=VALUE")
        if "=" not in words[0]:
            if not allow_old_form:
                raise self.err(inst, f"expected KEY=VALUE, got {words[0]!r}")
            if len(words) < 2:
                raise self.err(inst, "ENV needs a value")
            key = words[0]
            value = inst.args.strip()[len(key):].strip()
            return [(key, self.expand(inst, value, env))]
        out = []
        for w in words:
            k, sep, v = w.partition("=")
            if not sep or not k:
                raise self.err(inst, f"expected KEY=VALUE, got {w!r}")
            out.append((self.expand(inst, k, env), self.expand(inst, v, env)))
        return out

    def lower_run(self, st: Stage, ctx: _Ctx, inst: RawInstruction, env: dict[str, str]) -> RunStep:
        flags, rest = self.flags(inst, inst.args)
        if not rest:
            raise self.err(inst, "missing command")
        mounts = [self.parse_mount(st, inst, m, env, ctx.workdir) for m in flags.get("mount", [])]
        network = flags.get("network", [None])[0]
        if network not in (None, "default", "none", "host"):
            raise self.err(inst, f"invalid --network {network!r}")
        security = flags.get("security", ["sandbox"])[0]
        if security not in ("sandbox", "insecure"):
            raise self.err(inst, f"invalid --security {security!r}")
        stdin = None
        exec_form = self.json_or_none(inst, rest)
        if exec_form is not None:
            if not exec_form:
                raise self.err(inst, "empty exec form")
            args = exec_form
        elif inst.heredocs and must_parse_heredoc(rest) is not None:  # convert.go:1358
            body = inst.heredocs[0].body
            if body.startswith("#!"):
                interp = body.split("\n", 1)[0][2:].split()
                args, stdin = interp + ["/dev/stdin"], body.encode()
            else:
                args = ctx.shell + [body]
        elif inst.heredocs:
            script = rest + "".join("\n" + h.raw_body + h.name for h in inst.heredocs)  # convert.go:1395
            args = ctx.shell + [script]
        else:
            args = ctx.shell + [rest]
        run_env = self.run_env(ctx)
        mount_text = " ".join(f"--mount={self.mount_key(m)}" for m in mounts)
        text = "RUN " + (mount_text + " " if mount_text else "") + \
            (f"--network={network} " if network else "") + json.dumps(args)
        if run_env:
            text += " |" + " ".join(f"{k}={v}" for k, v in sorted(run_env.items()))
        return RunStep(inst.line, "RUN", text, args, run_env, mounts,
                       None if network == "default" else network, stdin)

    @staticmethod
    def mount_key(m: RunMount) -> str:
        """The mount as cache-key text (a secret's id only, never its value)."""
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
        return ",".join(bits)

    def parse_mount(self, st: Stage, inst: RawInstruction, text: str, env: dict[str, str], workdir: str) -> RunMount:
        fields: dict[str, str] = {}
        for part in self.expand(inst, text, env).split(","):
            k, sep, v = part.partition("=")
            fields[k.strip().lower()] = v if sep else "true"
        typ = fields.pop("type", "bind")
        if typ not in ("bind", "cache", "tmpfs", "secret", "ssh"):
            raise self.err(inst, f"unknown mount type {typ!r}")
        target = fields.pop("target", None) or fields.pop("dst", None) or fields.pop("destination", None) or ""
        if typ == "secret":
            sid = fields.get("id") or posixpath.basename(target)
            if not sid:
                raise self.err(inst, "secret mount needs id= or target=")
            if not target and not fields.get("env"):
                target = f"/run/secrets/{sid}"
        elif typ == "ssh":
            target = target or "/run/buildkit/ssh_agent.0"
        elif not target:
            raise self.err(inst, f"{typ} mount needs target=")
        if target and not target.startswith("/"):
            target = posixpath.join(workdir, target)
        from_stage, from_image = None, None
        if "from" in fields:
            from_stage, from_image = self.stage_ref(inst, st, fields.pop("from"))
        ro_default = typ == "bind"
        readonly = ro_default
        if "rw" in fields or "readwrite" in fields:
            readonly = False
        if "ro" in fields or "readonly" in fields:
            readonly = fields.get("ro", fields.get("readonly")) != "false"

        def num(key: str, base: int = 10) -> int | None:
            if key not in fields:
                return None
            try:
                return int(fields[key], base)
            except ValueError:
                raise self.err(inst, f"invalid {key}={fields[key]!r}") from None
        sharing = fields.get("sharing", "shared")
        if sharing not in ("shared", "private", "locked"):
            raise self.err(inst, f"invalid sharing={sharing!r}")
        return RunMount(typ, target, fields.get("source", fields.get("src", "")), from_stage, from_image, readonly,
                        fields.get("id", ""), sharing, num("mode", 8), num("uid"), num("gid"),
                        fields.get("required", "false") == "true", fields.get("env"), fields.get("size", ""))

    def lower_copy(self, st: Stage, ctx: _Ctx, inst: RawInstruction, env: dict[str, str]) -> CopyStep:
        kw = inst.keyword
        flags, rest = self.flags(inst, inst.args)
        add = kw == "ADD"
        words = self.json_or_none(inst, rest)
        if words is not None:
            words = [self.expand(inst, w, env) for w in words]
        else:
            words = self.expand_list(inst, rest, env)
        heredoc_names = {f"<<{h.name}" for h in inst.heredocs} | {f"<<-{h.name}" for h in inst.heredocs}
        inline = []
        sources = []
        for w in words[:-1] if len(words) > 1 else []:
            bare = w.replace('"', "").replace("'", "")
            if bare in heredoc_names:
                h = next(h for h in inst.heredocs if bare.endswith(h.name))
                body = self.expand(inst, h.body, env) if h.expand else h.body
                inline.append(InlineFile(h.name, body.encode()))
            else:
                sources.append(w)
        if len(words) < 2:
            raise self.err(inst, "expected at least one source and a destination")
        dest = words[-1]
        if not (sources or inline):
            raise self.err(inst, "no source files")
        if len(sources) + len(inline) > 1 and not dest.endswith("/"):
            raise self.err(inst, "when using more than one source, the destination must be a directory and end with a /")
        trailing = dest.endswith("/")
        if not dest.startswith("/"):
            dest = posixpath.join(ctx.workdir, dest)
        dest = posixpath.normpath(dest) + ("/" if trailing and dest != "/" else "")
        step = CopyStep(inst.line, kw, "", sources=sources, inline=inline, dest=dest, add=add)
        if "from" in flags:
            ref = self.expand(inst, flags["from"][0], env)
            step.from_stage, step.from_image = self.stage_ref(inst, st, ref)
        if "chown" in flags:
            step.chown = self.expand(inst, flags["chown"][0], env)
        if "chmod" in flags:
            mode = self.expand(inst, flags["chmod"][0], env)
            try:
                step.chmod = int(mode, 8)
                if step.chmod > 0o7777:
                    raise ValueError
            except ValueError:
                raise self.err(inst, f"invalid --chmod {mode!r}: expected an octal mode") from None
        step.link = flags.get("link", ["false"])[0] != "false"
        step.parents = flags.get("parents", ["false"])[0] != "false"
        step.keep_git_dir = flags.get("keep-git-dir", ["false"])[0] != "false"
        step.excludes = [self.expand(inst, e, env) for e in flags.get("exclude", [])]
        if "checksum" in flags:
            step.checksum = self.expand(inst, flags["checksum"][0], env)
            if not re.fullmatch(r"sha(256|384|512):[0-9a-f]+", step.checksum):
                raise self.err(inst, f"invalid --checksum {step.checksum!r}")
        origin = f"--from={flags['from'][0]} " if "from" in flags else ""
        opts = "".join(f"--{k}={v[0]} " for k, v in sorted(flags.items()) if k in ("chown", "chmod", "link",
                                                                                     "parents", "checksum"))
        opts += "".join(f"--exclude={e} " for e in step.excludes)
        inline_text = " ".join(f"<<{i.name}" for i in inline)
        step.text = f"{kw} {origin}{opts}{' '.join(sources)}{' ' + inline_text if inline_text else ''} {dest}"
        return step

    def lower_healthcheck(self, ctx: _Ctx, inst: RawInstruction) -> ConfigStep:
        flags, rest = self.flags(inst, inst.args)
        if rest.upper() == "NONE":
            if flags:
                raise self.err(inst, "HEALTHCHECK NONE takes no options")
            return ConfigStep(inst.line, "HEALTHCHECK", "HEALTHCHECK NONE", {"Healthcheck": {"Test": ["NONE"]}})
        first, _, cmd = rest.partition(" ")
        if first.upper() != "CMD" or not cmd.strip():
            raise self.err(inst, "expected HEALTHCHECK [OPTIONS] CMD command, or NONE")
        exec_form = self.json_or_none(inst, cmd)
        test = ["CMD"] + exec_form if exec_form is not None else ["CMD-SHELL", cmd.strip()]
        hc: dict = {"Test": test}
        for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                          ("start-interval", "StartInterval")):
            if flag in flags:
                hc[key] = _duration(self, inst, flags[flag][0])
        if "retries" in flags:
            try:
                hc["Retries"] = int(flags["retries"][0])
                if hc["Retries"] < 0:
                    raise ValueError
            except ValueError:
                raise self.err(inst, f"invalid --retries {flags['retries'][0]!r}") from None
        return ConfigStep(inst.line, "HEALTHCHECK", f"HEALTHCHECK {json.dumps(hc, sort_keys=True)}",
                          {"Healthcheck": hc})


_DUR = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_NS = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def _duration(low: _Lowerer, inst: RawInstruction, text: str) -> int:
    pos, total = 0, 0.0
    for m in _DUR.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise low.err(inst, f"invalid duration {text!r}")
    return int(total)


def build_graph(text: str, *, filename: str = "Dockerfile", build_args: dict[str, str] | None = None,
                target: str | None = None, platform: str = "linux/amd64", build_platform: str | None = None,
                resolve_base: Resolver | None = None) -> StepGraph:
    """Parse and lower ``text``; only the stages ``target`` (default: the last) needs."""
    source = parse_source(text, filename)
    return _Lowerer(source, build_args or {}, platform, build_platform or platform, resolve_base).lower(target)
