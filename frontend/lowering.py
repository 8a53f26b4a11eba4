"""What every instruction parser shares: the stage's lowering state, word
expansion with the Dockerfile's escape character, flag parsing (BuildKit's
bflag rules: known flags only, no repeats unless repeatable) and errors
naming FILE:LINE: INSTRUCTION."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

from frontend.errors import FrontendError
from frontend.expand import ExpandError, expand_heredoc, expand_word, expand_words, split_raw
from frontend.source import RawInstruction, parse_json_array
from frontend.steps import Span, Stage, Step

DEFAULT_SHELL = ["/bin/sh", "-c"]
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY",
              "no_proxy", "ALL_PROXY", "all_proxy")
REPEATABLE = {"mount", "exclude"}
BOOL_FLAGS = {"link", "parents", "keep-git-dir"}


@dataclass
class StageCtx:
    """Lowering state of one stage."""

    env: dict[str, str]  # ENV (persisted)
    args: dict[str, str]  # ARGs declared in the stage, with values
    shell: list[str]
    workdir: str
    cmd_set: bool = False
    onbuild: list[str] = field(default_factory=list)  # this stage's own ONBUILD triggers

    def expansion_env(self) -> dict[str, str]:
        return {**self.args, **self.env}


class Lowering:
    """Shared state of one Dockerfile's lowering: source, build args, stage names."""

    def __init__(self, filename: str, escape: str, build_args: Mapping[str, str]) -> None:
        self.filename, self.escape = filename, escape
        self.build_args = dict(build_args)
        self.used: set[str] = set()
        self.names: dict[str, int] = {}
        self.known: frozenset[str] = frozenset()  # every instruction keyword (ONBUILD checks its trigger)

    def span(self, inst: RawInstruction) -> Span:
        return Span(self.filename, inst.line)

    def err(self, inst: RawInstruction, cause: str) -> FrontendError:
        return FrontendError(cause, filename=self.filename, line=inst.line, instruction=inst.keyword)

    def fail(self, inst: RawInstruction, cause: str) -> FrontendError:
        """An error BuildKit raises while converting (dockerfile2llb), not while parsing: a build
        failure, exit status 1 (``err`` gives parse errors, status 2)."""
        error = self.err(inst, cause)
        error.exit_code = 1
        return error

    def expand(self, inst: RawInstruction, text: str, env: Mapping[str, str]) -> str:
        try:
            return expand_word(text, env, self.escape)
        except ExpandError as exc:
            raise self.err(inst, str(exc)) from None

    def expand_heredoc(self, inst: RawInstruction, text: str, env: Mapping[str, str]) -> str:
        try:
            return expand_heredoc(text, env)
        except ExpandError as exc:
            raise self.err(inst, str(exc)) from None

    def expand_list(self, inst: RawInstruction, text: str, env: Mapping[str, str]) -> list[str]:
        try:
            return expand_words(text, env, self.escape)
        except ExpandError as exc:
            raise self.err(inst, str(exc)) from None

    def split(self, inst: RawInstruction, text: str) -> list[str]:
        try:
            return split_raw(text, self.escape)
        except ExpandError as exc:
            raise self.err(inst, str(exc)) from None

    def flags(self, inst: RawInstruction, text: str, allowed: frozenset[str]) -> tuple[dict[str, list[str]], str]:
        """Leading ``--name[=value]`` flags (raw, not expanded) and the rest of the text."""
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
        """An exec-form JSON array of strings, or None for the shell form (invalid JSON included)."""
        t = text.strip()
        if not t.startswith("["):
            return None
        try:
            return parse_json_array(t)  # None for invalid JSON: Docker reads the shell form
        except ValueError:
            raise self.err(inst, "expected a JSON array of strings") from None

    def stage_ref(self, inst: RawInstruction, st: Stage, ref: str) -> tuple[int | None, str | None]:
        """--from value: a stage name (the last stage of that name, as BuildKit's
        ``findStateByName`` resolves after every stage was added) or index, else an image."""
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

    def run_env(self, ctx: StageCtx) -> dict[str, str]:
        """Build args visible to RUN: declared ARGs not shadowed by ENV, plus proxy args given."""
        env = {k: v for k, v in ctx.args.items() if k not in ctx.env}
        for k in PROXY_ARGS:
            if k in self.build_args:
                env[k] = self.build_args[k]
                self.used.add(k)
        return env


#: one instruction's parser: raw instruction (in its stage and state) -> its step, or None (ARG)
Parser = Callable[[Lowering, Stage, StageCtx, RawInstruction], "Step | None"]
