"""The subset of Go's text/template that people pass to ``buildah inspect --format`` and
``buildah images --format``, evaluated over JSON-like data (dicts, lists, scalars).

Supported actions: ``{{.}}``, field chains ``{{.A.B.C}}`` (a field is looked up exactly,
then case-insensitively, so both the Go field name ``.OCIv1.Architecture`` and the JSON key
``.OCIv1.architecture`` work), ``{{json .X}}`` / ``{{json .}}``, ``{{index .X "k" ...}}``
(map keys or list indexes), ``{{lower .X}}``/``{{upper .X}}``, and ``{{"text"}}``; a
trailing ``{{- ``/`` -}}`` trims spaces as in Go. Values print as Go's fmt does: strings
as they are, lists ``[a b]``, maps ``map[k:v]`` (keys sorted), nil ``<no value>``.
Anything else (``range``, ``if``, pipes, other functions) raises TemplateError naming the
action; the CLI turns that into a usage error (exit 2)."""
from __future__ import annotations

import json
import re
import shlex
from typing import Any

from builder.errors import UsageError

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_FUNCS = ("json", "index", "lower", "upper")


class TemplateError(UsageError):
    """An action outside the supported subset, or a field that does not exist."""


def go_format(value: Any) -> str:
    """``value`` as Go's fmt.Sprint prints it (%v)."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_format(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _field(obj: Any, name: str, path: str) -> Any:
    if isinstance(obj, dict):
        if name in obj:
            return obj[name]
        low = name.lower()
        for k in obj:
            if isinstance(k, str) and k.lower() == low:
                return obj[k]
        return None
    if obj is None:
        return None
    raise TemplateError(f"template: can't evaluate field {name} in {path} (not a map)")


def _operand(data: Any, token: str, action: str) -> Any:
    if token == ".":
        return data
    if token.startswith("."):
        obj = data
        walked = ""
        for part in token[1:].split("."):
            if not part:
                raise TemplateError(f"template: bad field chain {token!r} in {{{{{action}}}}}")
            obj = _field(obj, part, walked or ".")
            walked += "." + part
        return obj
    if token.startswith('"') or token.startswith("`"):
        return token[1:-1]
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    raise TemplateError(f"template: unsupported operand {token!r} in {{{{{action}}}}} (supported: .Field chains, "
                        f"\"strings\", numbers)")


def _index(obj: Any, keys: list[Any], action: str) -> Any:
    for k in keys:
        if isinstance(obj, dict):
            key = k if isinstance(k, str) else str(k)
            if key not in obj:
                return ""  # Go's index of a missing map key: the zero value
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(k, int):
            if not 0 <= k < len(obj):
                raise TemplateError(f"template: {{{{{action}}}}}: index {k} out of range")
            obj = obj[k]
        elif obj is None:
            return None
        else:
            raise TemplateError(f"template: {{{{{action}}}}}: cannot index {type(obj).__name__} with {k!r}")
    return obj


def _evaluate(action: str, data: Any) -> str:
    text = action.strip()
    if text.startswith("/*"):
        return ""
    if "|" in text and not text.startswith(("\"", "`")):
        raise TemplateError(f"unsupported template action {{{{{text}}}}}: pipes are not supported "
                            f"(supported: .Field, json, index, lower, upper)")
    try:
        words = shlex.split(text, posix=False)
    except ValueError:
        raise TemplateError(f"unsupported template action {{{{{text}}}}}: unbalanced quotes") from None
    if not words:
        raise TemplateError("template: empty action {{}}")
    head, args = words[0], words[1:]
    if head.startswith((".", "\"", "`")) or re.fullmatch(r"-?\d+", head):
        if args:
            raise TemplateError(f"unsupported template action {{{{{text}}}}}: a value takes no arguments")
        return go_format(_operand(data, head, text))
    if head not in _FUNCS:
        raise TemplateError(f"unsupported template action {{{{{text}}}}}: {head!r} is not supported "
                            f"(supported: .Field, json, index, lower, upper)")
    values = [_operand(data, a, text) for a in args]
    if head == "json":
        if len(values) != 1:
            raise TemplateError(f"template: {{{{{text}}}}}: json takes one argument")
        return json.dumps(values[0])
    if head == "index":
        if not values:
            raise TemplateError(f"template: {{{{{text}}}}}: index takes a value and keys")
        return go_format(_index(values[0], values[1:], text))
    if len(values) != 1 or not isinstance(values[0], str):
        raise TemplateError(f"template: {{{{{text}}}}}: {head} takes one string")
    return values[0].lower() if head == "lower" else values[0].upper()


def render(template: str, data: Any) -> str:
    """``template`` with each ``{{action}}`` replaced by its value over ``data``; Go's escapes
    ``\\n`` and ``\\t`` in the text are not interpreted (the shell passes them literally, as Go does)."""
    out: list[str] = []
    pos = 0
    for m in _ACTION.finditer(template):
        chunk = template[pos:m.start()]
        if m.group(1):
            chunk = chunk.rstrip()
        if out and out[-1] == "\0trim":
            out.pop()
            chunk = chunk.lstrip()
        out.append(chunk)
        out.append(_evaluate(m.group(2), data))
        if m.group(3):
            out.append("\0trim")
        pos = m.end()
    rest = template[pos:]
    if out and out[-1] == "\0trim":
        out.pop()
        rest = rest.lstrip()
    if "{{" in rest:
        raise TemplateError(f"template: unclosed action in {rest!r}")
    out.append(rest)
    return "".join(out)
