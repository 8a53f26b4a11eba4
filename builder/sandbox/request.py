"""What bale sends its namespace helper (builder/sandbox/helper.py): a call named by module and
qualified name, with arguments as JSON, never pickle. The helper resolves names only within
bale's own packages (the helper imports the ``modules`` a request lists, when they are bale's and
not loaded yet, before it forks the worker), and rebuilds objects without running
any of their code (no ``__init__``, no ``__setstate__``): the worst a malformed request can do
is fail in the worker it was given to.

Schema of one request (UTF-8 JSON object, at most ``MAX_BYTES``)::

    {"fn": "MODULE:QUALNAME", "args": [VALUE...], "what": STR, "modules": [MODULE...]}

    VALUE: null | bool | int | float | str | [VALUE...]          (a JSON list is a Python list)
         | {"$t": [VALUE...]}                                     tuple
         | {"$d": [[VALUE, VALUE]...]}                            dict (any hashable keys)
         | {"$b": BASE64}                                         bytes
         | {"$p": STR}                                            pathlib.Path
         | {"$fd": INDEX}                                         fd passed with SCM_RIGHTS (Fd)
         | {"$f": "MODULE:QUALNAME"}                              a function of bale's
         | {"$o": "MODULE:QUALNAME", "s": {ATTR: VALUE...}}        an instance: its class and __dict__

``encode_call`` raises NotPortable for anything else (a closure, a lambda, a function of a module
outside bale, an object with slots): the caller then forks a child of its own for that call.
"""
from __future__ import annotations

import base64
import importlib
import json
import sys
import types
from pathlib import Path, PurePath
from typing import Any, Callable

from builder.errors import SandboxError

MAX_BYTES = 64 << 20
MAX_DEPTH = 64
#: packages whose functions and classes a request may name (the CLI is never a target)
PACKAGES = ("builder.", "snapshotter.")
EXCLUDED = ("builder.cli",)


class NotPortable(Exception):
    """The call cannot be named in a request (see the module doc)."""


class Fd(int):
    """An fd argument: sent to the worker with SCM_RIGHTS, which receives it under another number.
    Where no helper is used (a plain forked child) it is the same fd, as the int it is."""


def _allowed_module(name: str) -> bool:
    return name.startswith(PACKAGES) and not name.startswith(EXCLUDED)


def _name_of(obj: Any) -> str:
    """``MODULE:QUALNAME`` of a module-level function or class of bale's; NotPortable otherwise."""
    module, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qual, str) or "<" in qual or not _allowed_module(module):
        raise NotPortable(f"{obj!r} is not a function or class of bale's modules")
    try:
        same = resolve(f"{module}:{qual}") is obj
    except SandboxError:
        same = False
    if not same:
        raise NotPortable(f"{module}:{qual} does not name {obj!r}")
    return f"{module}:{qual}"


def resolve(name: str) -> Any:
    """The function or class ``MODULE:QUALNAME`` names, from a module already imported and in
    PACKAGES; SandboxError for anything else (nothing is imported on a request's behalf)."""
    module_name, _, qual = name.partition(":")
    if not _allowed_module(module_name) or not qual:
        raise SandboxError(f"request names {name!r}, outside bale's modules")
    obj: Any = sys.modules.get(module_name)
    if obj is None:
        raise SandboxError(f"request names {name!r}, whose module is not loaded")
    for part in qual.split("."):
        if part.startswith("__"):
            raise SandboxError(f"request names {name!r}, a private attribute")
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) or isinstance(obj, types.FunctionType)) or obj.__module__ != module_name:
        raise SandboxError(f"request names {name!r}, not a function or class of that module")
    return obj


def _enc(value: Any, fds: list[int], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise NotPortable("nested too deeply")
    if isinstance(value, Fd):
        fds.append(int(value))
        return {"$fd": len(fds) - 1}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise NotPortable("a float that JSON cannot carry")
        return value
    if isinstance(value, list):
        return [_enc(v, fds, depth + 1) for v in value]
    if isinstance(value, tuple) and type(value) is tuple:
        return {"$t": [_enc(v, fds, depth + 1) for v in value]}
    if isinstance(value, dict) and type(value) is dict:
        return {"$d": [[_enc(k, fds, depth + 1), _enc(v, fds, depth + 1)] for k, v in value.items()]}
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode()}
    if isinstance(value, PurePath):
        return {"$p": str(value)}
    if isinstance(value, types.FunctionType):
        return {"$f": _name_of(value)}
    cls = type(value)
    state = getattr(value, "__dict__", None)
    if not isinstance(state, dict) or hasattr(cls, "__slots__"):
        raise NotPortable(f"{cls.__name__} has no plain attribute dict")
    return {"$o": _name_of(cls), "s": {k: _enc(v, fds, depth + 1) for k, v in state.items()}}


def encode_call(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[dict[str, Any], list[int]]:
    """The request document for ``fn(*args)`` (JSON-ready) and the fds to send with it, in ``$fd``
    index order. Raises NotPortable when ``fn`` or an argument has no name or form in the schema."""
    fds: list[int] = []
    name = _name_of(fn)
    encoded = [_enc(a, fds, 0) for a in args]
    modules = sorted({name.partition(":")[0]} | set(_modules(encoded)))
    doc = {"fn": name, "args": encoded, "what": getattr(fn, "__name__", "call"), "modules": modules}
    return doc, fds


def _modules(value: Any) -> list[str]:
    """Modules named by ``$o``/``$f`` tags in an encoded value."""
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            for tag in ("$o", "$f"):
                if isinstance(v.get(tag), str):
                    out.append(v[tag].partition(":")[0])
            stack.extend(v.values())
    return out


def _dec(value: Any, fds: list[int], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise SandboxError("request nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_dec(v, fds, depth + 1) for v in value]
    if not isinstance(value, dict) or not value:
        raise SandboxError("malformed request value")
    tag = next(iter(value))
    body = value[tag]
    if tag == "$t" and len(value) == 1 and isinstance(body, list):
        return tuple(_dec(v, fds, depth + 1) for v in body)
    if tag == "$d" and len(value) == 1 and isinstance(body, list):
        out = {}
        for pair in body:
            if not isinstance(pair, list) or len(pair) != 2:
                raise SandboxError("malformed request dict")
            out[_dec(pair[0], fds, depth + 1)] = _dec(pair[1], fds, depth + 1)
        return out
    if tag == "$b" and len(value) == 1 and isinstance(body, str):
        return base64.b64decode(body, validate=True)
    if tag == "$p" and len(value) == 1 and isinstance(body, str):
        return Path(body)
    if tag == "$fd" and len(value) == 1 and type(body) is int and 0 <= body < len(fds):
        return fds[body]
    if tag == "$f" and len(value) == 1 and isinstance(body, str):
        fn = resolve(body)
        if not isinstance(fn, types.FunctionType):
            raise SandboxError(f"request names {body!r}, not a function")
        return fn
    if tag == "$o" and set(value) == {"$o", "s"} and isinstance(body, str) and isinstance(value["s"], dict):
        cls = resolve(body)
        if not isinstance(cls, type) or issubclass(cls, BaseException):
            raise SandboxError(f"request names {body!r}, not a class")
        obj = cls.__new__(cls)
        obj.__dict__.update({str(k): _dec(v, fds, depth + 1) for k, v in value["s"].items()})
        return obj
    raise SandboxError("malformed request value")


def check(doc: Any) -> dict[str, Any]:
    """The request document (parsed JSON), checked for its top-level shape; SandboxError otherwise."""
    if not isinstance(doc, dict) or set(doc) != {"fn", "args", "what", "modules"} \
            or not isinstance(doc["args"], list) or not isinstance(doc["fn"], str) \
            or not isinstance(doc["what"], str) or not isinstance(doc["modules"], list) \
            or not all(isinstance(m, str) for m in doc["modules"]):
        raise SandboxError("malformed request")
    return doc


def preload(doc: dict[str, Any]) -> None:
    """Import the modules a checked request lists that are bale's and not loaded yet (in the helper,
    before it forks the worker, so later workers find them loaded). A module that fails to import
    is left to ``decode_call`` to report."""
    for name in doc["modules"]:
        if _allowed_module(name) and name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - reported by decode_call, in the worker
                pass


def decode_call(doc: dict[str, Any], fds: list[int]) -> tuple[Callable[..., Any], list[Any], str]:
    """(function, arguments, what) from a request ``check`` accepted; ``fds`` are the received fds
    by index. SandboxError for anything off-schema or naming something outside bale's loaded modules."""
    fn = resolve(doc["fn"])
    if not isinstance(fn, types.FunctionType):
        raise SandboxError(f"request names {doc['fn']!r}, not a function")
    return fn, [_dec(a, fds, 0) for a in doc["args"]], doc["what"][:200]
