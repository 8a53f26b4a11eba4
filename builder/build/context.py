"""The build context: a directory, a tarball, stdin (``-``: a tar or a lone
Dockerfile) or a git URL; unpacked into a private temp dir when it is not a
directory already (with the snapshotter's confined apply, so a hostile tarball
cannot write outside it)."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BuildError, UsageError
from snapshotter.apply import apply_tar
from snapshotter.safepath import PathEscape, secure_join


@dataclass
class Context:
    dir: Path
    dockerfile_text: str | None  # a Dockerfile given on stdin
    dockerfile_name: str  # for messages
    dockerfile_path: Path | None
    temp: Path | None = None

    def cleanup(self) -> None:
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)


def _is_git(text: str) -> bool:
    return text.startswith(("git://", "git@", "ssh://")) or (text.startswith("file://") and ".git" in text) or (text.startswith(("http://", "https://")) and
                                                    (text.endswith(".git") or ".git#" in text))


def _extract(stream: object, into: Path) -> None:
    try:
        apply_tar(stream, into, whiteout_format="native")  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001
        raise BuildError(f"build context: cannot extract tar: {exc}") from None


def open_context(context: str, dockerfile: str | None, tmp_root: Path) -> Context:
    temp = None
    df_text = None
    if context == "-":
        temp = Path(tempfile.mkdtemp(dir=tmp_root, prefix="context-"))
        data = sys.stdin.buffer.read()
        if data[257:262] == b"ustar" or data[:2] in (b"\x1f\x8b", b"BZ") or data[:6] == b"\xfd7zXZ\x00":
            _extract(io.BytesIO(data), temp)
        else:
            df_text = data.decode("utf-8", "surrogateescape")
        ctx_dir = temp
    elif _is_git(context):
        temp = Path(tempfile.mkdtemp(dir=tmp_root, prefix="context-"))
        url, _, ref = context.partition("#")
        ref, _, subdir = ref.partition(":")
        args = ["git", "clone", "--depth", "1", "--recurse-submodules"] + (["--branch", ref] if ref else []) + \
            [url, str(temp / "repo")]
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(temp, ignore_errors=True)
            lines = [ln.strip() for ln in r.stderr.splitlines() if ln.strip()]
            fatal = [ln for ln in lines if ln.startswith(("fatal: ", "error: "))]
            cause = (fatal or lines or [f"git exited with status {r.returncode}"])[0]
            cause = cause.removeprefix("fatal: ").removeprefix("error: ")
            raise BuildError(f"build context {context}: git clone failed: {cause}")
        ctx_dir = temp / "repo" / subdir if subdir else temp / "repo"
    elif os.path.isfile(context):
        temp = Path(tempfile.mkdtemp(dir=tmp_root, prefix="context-"))
        with open(context, "rb") as fh:
            _extract(fh, temp)
        ctx_dir = temp
    elif os.path.isdir(context):
        ctx_dir = Path(context)
    else:
        raise UsageError(f"build context {context}: no such directory, file or git URL")
    if df_text is not None:
        return Context(ctx_dir, df_text, "Dockerfile", None, temp)
    if dockerfile == "-":
        return Context(ctx_dir, sys.stdin.buffer.read().decode("utf-8", "surrogateescape"), "Dockerfile", None, temp)
    try:
        path = _dockerfile_path(ctx_dir, dockerfile, temp is not None)
        text = path.read_bytes().decode("utf-8", "surrogateescape")  # the frontend names a bad line
    except (OSError, PathEscape) as exc:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        if temp is None:
            raise UsageError(f"{path}: cannot read the Dockerfile: {why}") from None
        # an archive or a clone: named as the user gave it, never by the store's scratch directory
        where = "on stdin" if context == "-" else context
        holder = "repository" if _is_git(context) else "archive"
        name = dockerfile or "Dockerfile"
        if isinstance(exc, FileNotFoundError):
            raise UsageError(f"build context {where}: no {name} in the {holder}") from None
        raise UsageError(f"build context {where}: cannot read {name}: {why}") from None
    return Context(ctx_dir, text, str(dockerfile or path.name), path, temp)


def _dockerfile_path(ctx_dir: Path, dockerfile: str | None, unpacked: bool) -> Path:
    """The Dockerfile: ``dockerfile`` as a path of its own if it is a file, else in the context;
    by default Dockerfile, else Containerfile. In a context unpacked from an archive or cloned
    (``unpacked``), symlinks are resolved inside the context (secure_join): an archive's
    Dockerfile linked to /etc/hostname must not read the host's file."""
    def inside(name: str) -> Path:
        return secure_join(ctx_dir, name) if unpacked else ctx_dir / name
    if dockerfile:
        path = Path(dockerfile)
        if path.is_file():
            return path
        return inside(dockerfile) if unpacked or inside(dockerfile).is_file() else path
    candidates = [inside(n) for n in ("Dockerfile", "Containerfile")]
    return next((p for p in candidates if p.is_file()), candidates[0])
