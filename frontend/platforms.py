"""``FROM --platform=`` values as BuildKit reads them: containerd/platforms Parse
(platforms.go, v1.0.0-rc.4 as vendored by BuildKit; dockerfile2llb/convert.go:446
calls it and wraps its error as ``failed to parse platform VALUE: ...``)."""
from __future__ import annotations

import json
import re

_SPECIFIER = re.compile(r"[A-Za-z0-9_.-]+")  # platforms.go:126 specifierRe
_OS = re.compile(r"([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?")  # :127 osRe
_ESCAPES = re.compile(r"%(?![0-9A-Fa-f]{2})")  # url.PathUnescape refuses a % not followed by 2 hex digits
#: database.go isKnownOS / isKnownArch
KNOWN_OS = frozenset("aix android darwin dragonfly freebsd hurd illumos ios js linux nacl netbsd openbsd plan9 "
                     "solaris windows zos".split())
KNOWN_ARCH = frozenset("386 amd64 amd64p32 arm armbe arm64 arm64be ppc64 ppc64le loong64 mips mipsle mips64 "
                       "mips64le mips64p32 mips64p32le ppc riscv riscv64 s390 s390x sparc sparc64 wasm".split())
_INVALID = "invalid argument"  # errdefs.ErrInvalidArgument, wrapped with %w


class PlatformError(ValueError):
    """A platform that containerd's Parse refuses; the message is its error text."""


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # Go's %q, near enough for a message


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """database.go normalizeArch."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", {"8": "", "v8": "", "v8.0": "", "9": "v9", "9.0": "v9", "v9.0": "v9"}.get(variant, variant)
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        return "arm", {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}.get(variant, variant)
    return arch, variant


def parse_platform(spec: str, host_os: str, host_arch: str) -> str:
    """``OS/ARCH[/VARIANT]`` (normalized: aarch64 is arm64, x86_64 amd64 ...) for a platform
    specifier as containerd's Parse accepts it; ``host_os``/``host_arch`` fill in a lone OS or
    architecture (Go's runtime.GOOS/GOARCH there). An OS version or features in parentheses
    (``windows(10.0.17763)``) are checked and left out of the result. Raises PlatformError with
    containerd's message (``"bogus": unknown operating system or architecture: invalid argument``)."""
    if "*" in spec:
        raise PlatformError(f"{_q(spec)}: wildcards not yet supported: {_INVALID}")
    parts = spec.split("/", 3)
    m = _OS.fullmatch(parts[0])
    if m is None:
        raise PlatformError(f"{_q(parts[0])} is an invalid OS component of {_q(spec)}: OSAndVersion specifier "
                            f"component must match {_q('^' + _OS.pattern + '$')}: {_INVALID}")
    os_name = m.group(1).lower()
    os_name = "darwin" if os_name == "macos" else os_name
    if _ESCAPES.search(m.group(2) or ""):
        raise PlatformError(f"{_q(spec)} has an invalid OS version {_q(m.group(2))}: invalid URL escape")
    for feature in (m.group(3) or "")[1:].split("+") if m.group(3) else []:
        if _ESCAPES.search(feature):
            raise PlatformError(f"{_q(spec)} has invalid OS features: invalid os feature {_q(feature)}: "
                                "invalid URL escape")
    for part in parts[1:]:
        if not _SPECIFIER.fullmatch(part):
            raise PlatformError(f"{_q(part)} is an invalid component of {_q(spec)}: platform specifier component "
                                f"must match {_q('^' + _SPECIFIER.pattern + '$')}: {_INVALID}")
    if len(parts) == 1:
        if os_name in KNOWN_OS:
            return f"{os_name}/{host_arch}"
        arch, variant = normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in KNOWN_ARCH:
            return "/".join(p for p in (host_os, arch, variant) if p)
        raise PlatformError(f"{_q(spec)}: unknown operating system or architecture: {_INVALID}")
    if len(parts) == 2:
        arch, variant = normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return "/".join(p for p in (os_name, arch, variant) if p)
    if len(parts) == 3:
        arch, variant = normalize_arch(parts[1], parts[2])
        if arch == "arm64" and variant == "":
            variant = "v8"
        return "/".join(p for p in (os_name, arch, variant) if p)
    raise PlatformError(f"{_q(spec)}: cannot parse platform specifier: {_INVALID}")
