"""Dockerfile → StepGraph: stages, ARG scoping and one typed step per
instruction. Only the stages the target needs are lowered (a broken stage
nobody needs does not break the build), but the whole file is parsed. Knows
nothing of sandboxes or stores: base images are described by a
``resolve_base(ref, platform) -> BaseInfo`` callback.

Each instruction's parser lives in one ``lower_*`` module and registers itself
in that module's ``PARSERS`` table; this module only splits stages, scopes ARGs
and dispatches by keyword."""
from __future__ import annotations

import re
from typing import Callable

from frontend import lower_config, lower_copy, lower_run
from frontend.errors import FrontendError
from frontend.lowering import DEFAULT_SHELL, PROXY_ARGS, Lowering, Parser, StageCtx
from frontend.platforms import PlatformError, parse_platform
from frontend.source import RawInstruction, Source, parse_source
from frontend.steps import BaseInfo, Span, Stage, Step, StepGraph

PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "BUILDPLATFORM", "BUILDOS",
                 "BUILDARCH", "BUILDVARIANT")
PARSERS: dict[str, Parser] = {**lower_run.PARSERS, **lower_copy.PARSERS, **lower_config.PARSERS}
KNOWN = frozenset(PARSERS) | {"FROM", "ARG"}
FROM_FLAGS = frozenset({"platform"})

Resolver = Callable[[str, "str | None"], BaseInfo]

__all__ = ["build_graph", "platform_args", "parse_build_arg_file", "DEFAULT_SHELL", "PROXY_ARGS", "KNOWN"]


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


class _Lowerer(Lowering):
    def __init__(self, source: Source, build_args: dict[str, str], target_platform: str, build_platform: str,
                 resolve_base: Resolver | None) -> None:
        super().__init__(source.filename, source.escape, build_args)
        self.src = source
        self.resolve_base = resolve_base
        self.auto_args = platform_args(target_platform, build_platform)
        self.target_platform = target_platform
        self.known = KNOWN

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
                for arg, default in self.arg_decls(inst, meta):
                    value = self.build_args.get(arg, default if default is not None else meta.get(arg))
                    self.used.add(arg)
                    if value is not None:
                        meta[arg] = value
                    else:
                        meta.pop(arg, None)
            else:
                stages_raw[-1][1].append(inst)
        if not stages_raw:
            raise FrontendError("no FROM instruction", filename=self.src.filename)
        self.meta = meta
        heads: list[Stage] = []
        names: dict[str, int] = {}
        warnings: list[str] = []
        for idx, (frm, _) in enumerate(stages_raw):
            flags, rest = self.flags(frm, frm.args, FROM_FLAGS)
            words = self.expand_list(frm, rest, meta)
            name: str | None = None
            if len(words) == 3 and words[1].lower() == "as":
                name = words[2].lower()
                if not re.fullmatch(r"[a-z][a-z0-9-_.]*", name):
                    raise self.err(frm, f"invalid stage name {words[2]!r}")
                if name in names:  # BuildKit's DuplicateStageName lint: a warning; the later stage
                    # wins for --target and --from, FROM NAME takes the latest before it (convert.go addState)
                    warnings.append(f"{self.src.filename}:{frm.line}: DuplicateStageName: Duplicate stage name "
                                    f"{name!r}, stage names should be unique")
            elif len(words) != 1:
                raise self.err(frm, "expected FROM [--platform=P] IMAGE [AS NAME]")
            base = words[0]
            if not base:
                raise self.err(frm, "empty base image (an ARG without value?)")
            platform = self.platform(frm, flags["platform"][0], meta) if "platform" in flags else None
            base_stage = names.get(base.lower())
            if base_stage is None and base.isdigit() and int(base) < idx:
                base_stage = None  # FROM <index> is not allowed by Docker: an image named "0"
            st = Stage(idx, name, self.span(frm), None if base_stage is not None or base == "scratch" else base,
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
        graph = StepGraph(needed, tidx, warnings)
        unused = sorted(k for k in self.build_args if k not in self.used and k not in PROXY_ARGS)
        if unused:
            graph.warnings.append(f"one or more build-args {unused} were not consumed")
        return graph

    def platform(self, frm: RawInstruction, raw: str, meta: dict[str, str]) -> str:
        """FROM --platform, expanded with the global ARGs and parsed as containerd's platforms.Parse
        (dockerfile2llb/convert.go:428-450): empty or refused is a build error (exit 1)."""
        value = self.expand(frm, raw, meta)
        if not value:
            raise self.fail(frm, f"empty platform value from expression {raw}")
        try:
            return parse_platform(value, self.auto_args["BUILDOS"], self.auto_args["BUILDARCH"])
        except PlatformError as exc:
            raise self.fail(frm, f"failed to parse platform {raw}: {exc}") from None

    def arg_decls(self, inst: RawInstruction, env: dict[str, str]) -> list[tuple[str, str | None]]:
        out = []
        words = self.split(inst, inst.args)
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
        ctx = StageCtx(env, {}, list(info.shell or DEFAULT_SHELL), info.workdir or "/")
        triggers = []
        for trig in info.onbuild:
            parsed = parse_source(trig + "\n", self.src.filename).instructions
            for t in parsed:
                if t.keyword in lower_config.NOT_TRIGGERS:
                    raise self.err(frm, f"{t.keyword} is not allowed as an ONBUILD trigger")
                t.line = frm.line
                triggers.append(t)
        for inst in triggers + body:
            step = self.lower_inst(st, ctx, inst)
            if step is not None:
                st.steps.append(step)
        # a stage used as a base hands on its own ONBUILD triggers (BuildKit convert.go resolveStages:
        # "onbuilds" of a stage base are its base's OnbuildCommands; the inherited ones were consumed)
        self.stage_ctx_end[st.index] = BaseInfo([f"{k}={v}" for k, v in ctx.env.items()], ctx.workdir, ctx.shell,
                                                list(ctx.onbuild))

    def lower_inst(self, st: Stage, ctx: StageCtx, inst: RawInstruction) -> Step | None:
        kw = inst.keyword
        if kw == "FROM":
            raise self.err(inst, "FROM inside a stage")
        if kw == "ARG":
            for name, default in self.arg_decls(inst, ctx.expansion_env()):
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
        parser = PARSERS.get(kw)
        if parser is None:  # pragma: no cover - lower() rejects unknown keywords first
            raise self.err(inst, "unknown instruction")
        return parser(self, st, ctx, inst)


def build_graph(text: str, *, filename: str = "Dockerfile", build_args: dict[str, str] | None = None,
                target: str | None = None, platform: str = "linux/amd64", build_platform: str | None = None,
                resolve_base: Resolver | None = None) -> StepGraph:
    """Parse and lower ``text``; only the stages ``target`` (default: the last) needs."""
    source = parse_source(text, filename)
    return _Lowerer(source, build_args or {}, platform, build_platform or platform, resolve_base).lower(target)
