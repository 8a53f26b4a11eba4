"""What crosses from a namespace child back to bale: one JSON document with a
fixed schema, never pickle. The pipe it travels through may be reachable by
sandboxed code (``/proc/PID/fd`` where a RUN could see bale's helpers), so the
reader trusts nothing it gets: the worst a forged answer can do is be a wrong
plain value or an error of a known class with a bounded message.

Schema (UTF-8 JSON, at most ``MAX_BYTES``)::

    {"ok": VALUE}                 VALUE: null | bool | int | float | str | list | dict with str keys
    {"error": {"class": NAME, "message": STR[, "status": INT]}}   NAME from ERROR_CLASSES

Tuples become lists on the way (JSON has no tuples); anything else that is not
plain data is refused in the child with a SandboxError naming its type.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from builder import errors as be
from builder.errors import SandboxError

MAX_BYTES = 64 << 20
MAX_MESSAGE = 8192
MAX_DEPTH = 64

JSON = Any  # null | bool | int | float | str | list[JSON] | dict[str, JSON]


def _error_classes() -> dict[str, Callable[[str], BaseException]]:
    from snapshotter.errors import SnapshotError
    plain: list[type[BaseException]] = [be.BaleError, be.UsageError, be.StoreError, be.ImageNotFound, be.FormatError,
                                        be.DigestMismatch, be.RegistryError, be.AuthError, be.NotFoundError,
                                        be.SandboxError, be.ContainerError, be.BuildError, SnapshotError]
    return {cls.__name__: cls for cls in plain}


#: the only classes an error from a namespace child may come back as (RunFailed carries "status")
ERROR_CLASSES = frozenset(_error_classes()) | {"RunFailed"}


def plain(value: Any, depth: int = 0) -> JSON:
    """``value`` as JSON-shaped data (tuples to lists); TypeError for anything else."""
    if depth > MAX_DEPTH:
        raise TypeError("nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"dict key of type {type(k).__name__}")
            out[k] = plain(v, depth + 1)
        return out
    raise TypeError(f"{type(value).__name__} is not plain data")


def encode_ok(value: Any) -> bytes:
    try:
        return json.dumps({"ok": plain(value)}, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        return encode_error(SandboxError(f"result not transferable: {exc}"))


def encode_error(exc: BaseException) -> bytes:
    """The error as class name + message; OSErrors and unknown classes become SandboxError."""
    name = type(exc).__name__
    if isinstance(exc, OSError):
        name, message = "OSError", exc.strerror if exc.strerror else str(exc)
        if exc.filename is not None and exc.strerror:
            message = f"{message}: {exc.filename}"
    else:
        message = str(exc)
        if name not in ERROR_CLASSES:
            message, name = f"{name}: {message}", "SandboxError"
    doc: dict[str, Any] = {"class": name, "message": message[:MAX_MESSAGE]}
    status = getattr(exc, "status", None)
    if name == "RunFailed" and isinstance(status, int):
        doc["status"] = status
    return json.dumps({"error": doc}).encode()


def _bad(what: str, why: str) -> SandboxError:
    return SandboxError(f"{what}: malformed answer from the namespace child ({why})")


def decode(data: bytes, what: str) -> JSON:
    """The value of an ``ok`` answer; raises the error an ``error`` answer names.
    ``what`` names the operation in messages. Anything off-schema is a SandboxError."""
    if not data:
        raise SandboxError(f"{what}: the namespace child died without an answer")
    if len(data) > MAX_BYTES:
        raise _bad(what, "too large")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad(what, "not JSON") from None
    if not isinstance(doc, dict) or len(doc) != 1:
        raise _bad(what, "not one key")
    if "ok" in doc:
        return doc["ok"]
    err = doc.get("error")
    if not isinstance(err, dict) or not set(err) <= {"class", "message", "status"}:
        raise _bad(what, "bad error record")
    name, message = err.get("class"), err.get("message")
    if not isinstance(name, str) or not isinstance(message, str) or len(message) > MAX_MESSAGE:
        raise _bad(what, "bad error record")
    message = message.replace("\n", " ")
    if name == "OSError":
        raise SandboxError(f"{what}: {message}")
    if name == "RunFailed":
        status = err.get("status")
        raise be.RunFailed(message, status if isinstance(status, int) and not isinstance(status, bool) else 1)
    cls = _error_classes().get(name)
    if cls is None:
        raise _bad(what, "unknown error class")
    raise cls(message)
