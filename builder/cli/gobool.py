"""Go-style boolean flags (spf13/pflag, which buildah uses): ``--layers=true`` and
``--layers=false`` as well as a bare ``--layers``, for every boolean flag of every command.

pflag's boolFlag parses ``--name=VALUE`` with strconv.ParseBool (1, t, T, TRUE, true, True,
0, f, F, FALSE, false, False); a bare ``--name`` is true and ``--name VALUE`` does not take
VALUE. click has no such flag type, so the group rewrites a command's arguments before click
parses them: ``--flag=true`` becomes ``--flag``, ``--flag=false`` becomes the flag's
``--no-...`` form when it has one and is dropped otherwise (such flags default to false).
CI scripts such as redhat-actions/buildah-build pass ``--layers=${layers}``."""
from __future__ import annotations

import click

TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_bool(text: str, name: str) -> bool:
    """strconv.ParseBool; anything else is a usage error (exit 2) naming the flag."""
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise click.UsageError(f"invalid argument {text!r} for {name}: expected true or false")


def _bool_options(cmd: click.Command) -> dict[str, tuple[click.Option, bool]]:
    """long flag name -> (option, whether the name is the option's negative form)."""
    out: dict[str, tuple[click.Option, bool]] = {}
    for p in cmd.params:
        if isinstance(p, click.Option) and p.is_flag and p.is_bool_flag:
            for name in p.opts:
                out[name] = (p, False)  # --quiet=false and -q=false (pflag takes both)
            for name in p.secondary_opts:
                if name.startswith("--"):
                    out[name] = (p, True)
    return out


def _bool_valued(cmd: click.Command) -> set[str]:
    """Long names of options that take a true/false value (``--tls-verify``): bare, they mean true."""
    out: set[str] = set()
    for p in cmd.params:
        func = getattr(p.type, "func", None)
        if isinstance(p, click.Option) and not p.is_flag and getattr(func, "__name__", "") == "_bool_flag":
            out.update(n for n in p.opts if n.startswith("--"))
    return out


def rewrite_bool_args(cmd: click.Command, args: list[str]) -> list[str]:
    """``args`` with every ``--flag=VALUE`` of a boolean flag of ``cmd`` turned into click's
    spelling, and a bare ``--tls-verify`` (an option taking true/false) made ``--tls-verify=true``;
    everything after ``--`` is left alone."""
    flags = _bool_options(cmd)
    valued = _bool_valued(cmd)
    if not flags and not valued:
        return list(args)
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            out.extend(args[i:])
            break
        if arg in valued:
            out.append(arg + "=true")
            continue
        name, eq, value = arg.partition("=")
        if not eq or name not in flags:
            out.append(arg)
            continue
        opt, negative = flags[name]
        want = parse_go_bool(value, name) != negative
        if want:
            out.append(name if not negative else next(n for n in opt.opts if n.startswith("--")))
        elif opt.secondary_opts:
            out.append(opt.secondary_opts[0])
        # else: a plain flag defaults to false; leaving it out is --flag=false
    return out


class GoBoolGroup(click.Group):
    """A group whose subcommands take Go-style ``--flag=true|false``."""

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None and not isinstance(cmd, click.Group):
            rest = rewrite_bool_args(cmd, rest)
        return name, cmd, rest
