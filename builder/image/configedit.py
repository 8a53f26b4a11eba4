"""Edits of an image's runtime configuration (the ``config`` object of an OCI
image config), shared by ``bale config`` and the Dockerfile executor.

Keys follow the Docker/OCI spelling: Env, Cmd, Entrypoint, WorkingDir, User,
Labels, ExposedPorts, Volumes, StopSignal, and the Docker extensions
Healthcheck, Shell and OnBuild (kept in OCI images too, as BuildKit does).
"""
from __future__ import annotations

import json
import re
from typing import Any

from builder.errors import UsageError
from frontend.signals import parse_signal

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ["/bin/sh", "-c"]


def env_list_to_dict(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def set_env(cfg: dict[str, Any], key: str, value: str) -> None:
    """Set K=V, keeping the position of an existing K (as Docker does)."""
    env = list(cfg.get("Env") or [])
    for i, item in enumerate(env):
        if item.partition("=")[0] == key:
            env[i] = f"{key}={value}"
            break
    else:
        env.append(f"{key}={value}")
    cfg["Env"] = env


def unset_env(cfg: dict[str, Any], key: str) -> None:
    cfg["Env"] = [e for e in cfg.get("Env") or [] if e.partition("=")[0] != key]


def parse_command(text: str, shell: list[str] | None, what: str) -> list[str]:
    """A JSON array as given, or a shell string wrapped in the shell (buildah's --cmd/--entrypoint)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError as exc:
            raise UsageError(f"{what}: invalid JSON array: {exc}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{what}: expected a JSON array of strings")
        return value
    if not stripped:
        return []
    return list(shell or DEFAULT_SHELL) + [text]


def add_port(cfg: dict[str, Any], port: str) -> None:
    m = re.fullmatch(r"(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?", port.strip())
    if not m:
        raise UsageError(f"invalid port {port!r}: expected PORT[-END][/tcp|udp|sctp]")
    lo, hi, proto = int(m.group(1)), int(m.group(2) or m.group(1)), m.group(3) or "tcp"
    if not (0 < lo <= hi <= 65535):
        raise UsageError(f"invalid port {port!r}: out of range")
    ports = dict(cfg.get("ExposedPorts") or {})
    for p in range(lo, hi + 1):
        ports[f"{p}/{proto}"] = {}
    cfg["ExposedPorts"] = ports


def add_volume(cfg: dict[str, Any], path: str) -> None:
    vols = dict(cfg.get("Volumes") or {})
    vols[path] = {}
    cfg["Volumes"] = vols


def set_label(cfg: dict[str, Any], key: str, value: str) -> None:
    labels = dict(cfg.get("Labels") or {})
    labels[key] = value
    cfg["Labels"] = labels


def unset_label(cfg: dict[str, Any], key: str) -> None:
    labels = dict(cfg.get("Labels") or {})
    labels.pop(key, None)
    cfg["Labels"] = labels


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_duration(text: str, what: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``500ms``) in nanoseconds, as the Healthcheck fields store it."""
    text = text.strip()
    if text == "0":
        return 0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise UsageError(f"{what}: invalid duration {text!r}")
    return int(total)


def set_healthcheck(cfg: dict[str, Any], test: list[str] | None, *, interval: str | None = None,
                    timeout: str | None = None, start_period: str | None = None,
                    start_interval: str | None = None, retries: int | None = None) -> None:
    """``test`` None or ["NONE"] disables the inherited healthcheck."""
    if not test or test == ["NONE"]:
        cfg["Healthcheck"] = {"Test": ["NONE"]}
        return
    hc: dict[str, Any] = {"Test": test}
    for key, val in (("Interval", interval), ("Timeout", timeout), ("StartPeriod", start_period),
                     ("StartInterval", start_interval)):
        if val:
            hc[key] = parse_duration(val, f"healthcheck {key.lower()}")
    if retries is not None:
        if retries < 0:
            raise UsageError("healthcheck retries must not be negative")
        hc["Retries"] = retries
    cfg["Healthcheck"] = hc


def healthcheck_test(cmd: str, shell: list[str] | None) -> list[str]:
    """The Healthcheck.Test for a --healthcheck string: ["CMD", ...] for JSON, ["CMD-SHELL", s] otherwise."""
    stripped = cmd.strip()
    if stripped.upper() == "NONE":
        return ["NONE"]
    if stripped.startswith("["):
        return ["CMD"] + parse_command(stripped, None, "healthcheck")
    return ["CMD-SHELL", cmd]


def stop_signal(value: str) -> str:
    """The StopSignal for ``--stop-signal VALUE``: a name upper-cased with the SIG prefix (``term``
    gives ``SIGTERM``), a number as it is. Accepts what moby/sys/signal ParseSignal accepts (as
    BuildKit's STOPSIGNAL, frontend.signals); anything else is a UsageError."""
    v = value.strip()
    cause = parse_signal(v)
    if cause:
        raise UsageError(f"--stop-signal: {cause}")
    if re.fullmatch(r"[+-]?[0-9]+", v, re.ASCII):
        return v
    up = v.upper()
    return up if up.startswith("SIG") else "SIG" + up
