"""COPY and ADD: sources, heredoc files, destination, and the --from, --chown,
--chmod, --link, --exclude, --parents, --checksum, --keep-git-dir flags."""
from __future__ import annotations

import posixpath
import re

from frontend.heredoc import heredoc_file_name, must_parse_heredoc
from frontend.lowering import Lowering, Parser, StageCtx
from frontend.source import RawInstruction
from frontend.steps import CopyFromStep, CopyStep, InlineFile, Stage

FLAGS = {"COPY": frozenset({"from", "chown", "chmod", "link", "exclude", "parents"}),
         "ADD": frozenset({"chown", "chmod", "link", "exclude", "checksum", "keep-git-dir", "from"})}


def lower_copy(low: Lowering, st: Stage, ctx: StageCtx, inst: RawInstruction) -> CopyStep | CopyFromStep:
    kw = inst.keyword
    env = ctx.expansion_env()
    flags, rest = low.flags(inst, inst.args, FLAGS[kw])
    words = low.json_or_none(inst, rest)
    if words is not None:
        words = [low.expand(inst, w, env) for w in words]
    else:
        words = low.expand_list(inst, rest, env)
    by_name = {h.name: h for h in inst.heredocs}  # the last of a name wins (instructions/parse.go:284-287)
    inline = []
    shown_inline = []
    sources = []
    for w in words[:-1] if len(words) > 1 else []:
        word = must_parse_heredoc(w)
        h = by_name.get(word.name) if word is not None else None
        if h is None:
            sources.append(w)
            continue
        try:
            name = heredoc_file_name(h.name)
        except ValueError as exc:
            raise low.err(inst, f"heredoc <<{h.name}: {exc}") from None
        body = low.expand_heredoc(inst, h.body, env) if h.expand else h.body
        inline.append(InlineFile(name, body.encode()))
        shown_inline.append(f"<<{h.name}")
    if len(words) < 2:
        raise low.err(inst, "expected at least one source and a destination")
    dest = words[-1]
    if not (sources or inline):
        raise low.err(inst, "no source files")
    # several sources to a DEST without "/" are accepted: BuildKit copies each to the same path in
    # order (dockerfile2llb/convert_copy.go:127-291 has no such check; issue 8 class 4)
    trailing = dest.endswith("/") or dest == "."  # "." is "./" (dockerfile2llb/convert.go:1744-1748)
    if not dest.startswith("/"):
        dest = posixpath.join(ctx.workdir, dest)
    dest = posixpath.normpath(dest)
    dest += "/" if trailing and dest != "/" else ""
    chown = low.expand(inst, flags["chown"][0], env) if "chown" in flags else None
    chmod = None
    if "chmod" in flags:
        mode = low.expand(inst, flags["chmod"][0], env)
        try:
            chmod = int(mode, 8)
            if chmod > 0o7777:
                raise ValueError
        except ValueError:
            raise low.err(inst, f"invalid --chmod {mode!r}: expected an octal mode") from None
    checksum = None
    if "checksum" in flags:
        checksum = low.expand(inst, flags["checksum"][0], env)
        if not re.fullmatch(r"sha(256|384|512):[0-9a-f]+", checksum):
            raise low.err(inst, f"invalid --checksum {checksum!r}")
    excludes = tuple(low.expand(inst, e, env) for e in flags.get("exclude", []))
    link = flags.get("link", ["false"])[0] != "false"
    parents = flags.get("parents", ["false"])[0] != "false"
    keep_git_dir = flags.get("keep-git-dir", ["false"])[0] != "false"
    origin = ""
    from_stage, from_image = None, None
    if "from" in flags:
        ref = low.expand(inst, flags["from"][0], env)
        from_stage, from_image = low.stage_ref(inst, st, ref)
        origin = f"--from={flags['from'][0]}"
    # the history text shows the flags with their expanded values (a changed --chown=$OWNER shows)
    shown = {"chown": chown, "chmod": flags["chmod"][0] if "chmod" in flags else None,
             "link": "true" if link else None, "parents": "true" if parents else None, "checksum": checksum}
    opts = [f"--{k}={v}" for k, v in sorted(shown.items()) if v is not None] + [f"--exclude={e}" for e in excludes]
    # one space between words, heredoc names after the paths (convert_copy.go:127-128, 294-295, 320:
    # "COPY <<EOF /x" when there are no paths)
    text = " ".join([kw, *([origin] if origin else []), *opts, *sources, *shown_inline, dest])
    span = low.span(inst)
    if from_stage is not None or from_image is not None:
        if inline:
            raise low.err(inst, "--from cannot be used with heredoc sources")
        return CopyFromStep(span=span, keyword=kw, text=text, sources=tuple(sources), dest=dest, add=kw == "ADD",
                            chown=chown, chmod=chmod, link=link, excludes=excludes, parents=parents,
                            checksum=checksum, keep_git_dir=keep_git_dir, from_stage=from_stage,
                            from_image=from_image)
    return CopyStep(span=span, keyword=kw, text=text, sources=tuple(sources), dest=dest, add=kw == "ADD",
                    chown=chown, chmod=chmod, link=link, excludes=excludes, parents=parents, checksum=checksum,
                    keep_git_dir=keep_git_dir, inline=tuple(inline))

PARSERS: dict[str, Parser] = {"COPY": lower_copy, "ADD": lower_copy}
