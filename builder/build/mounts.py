"""RUN --mount: the sandbox binds a RUN step gets, and what they expose for its cache key.

Kinds (BuildKit's): ``bind`` (from the context, another stage, an image or a
named context; read-only unless ``rw``), ``cache`` (a persistent directory per
id), ``tmpfs``, ``secret`` (a --secret value as a file or an environment
variable, never in a key or a layer) and ``ssh`` (not supported: an error
when required).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from builder.build.copier import Source
from builder.build.digest import context_digest
from builder.build.state import StageState
from builder.errors import BuildError
from builder.sandbox.spec import BindSpec
from builder.workspace.cachemounts import HeldCache, acquire, mount_name
from builder.workspace.snapshots import make_cache_dir, snapshot_root_path
from frontend.steps import RunMount, RunStep

if TYPE_CHECKING:
    from builder.build.builder import Builder


@dataclass
class Mounts:
    binds: list[BindSpec] = field(default_factory=list)
    #: (driver, key) of other stages' snapshots the binds read from (mounted first)
    extra: list[tuple[str, str]] = field(default_factory=list)
    env: list[str] = field(default_factory=list)  # secret env=VAR values
    #: the cache-mount instances this RUN holds (builder.workspace.cachemounts): release() after it
    held: list[HeldCache] = field(default_factory=list)

    def release(self) -> None:
        """Let go of the cache-mount instances (idempotent)."""
        for h in self.held:
            h.release()


def secret_value(b: "Builder", m: RunMount) -> bytes | None:
    """A --secret's value for a mount; None when not given (an error if the mount requires it)."""
    spec = b.opts.secrets.get(m.id)
    if spec is None and m.required:
        raise BuildError(f"secret {m.id} is required but was not given with --secret")
    return spec.read() if spec is not None else None


def confined_context_path(context: Path, rel: str) -> Path:
    ctx = context.resolve()
    p = (ctx / rel.lstrip("/")).resolve()
    if p != ctx and ctx not in p.parents:
        raise BuildError(f"bind mount source {rel}: outside the build context")
    return p


def _bind_origin(b: "Builder", m: RunMount) -> "StageState | Path":
    if m.from_stage is not None:
        return b.states[m.from_stage]
    assert m.from_image is not None
    return b.named_state(m.from_image)


def mount_digests(b: "Builder", step: RunStep) -> list[str]:
    """For the cache key: a digest of what each bind mount exposes (the context directory as
    the bind shows it, a stage's subtree, an image by its layers); the other kinds count by their
    options only (a cache mount's content never enters a key, as in BuildKit)."""
    out = []
    for m in step.mounts:
        if m.type != "bind":
            out.append("")
            continue
        if m.from_stage is None and not m.from_image:
            src = confined_context_path(b.context.dir, m.source or ".")
            rel = os.path.relpath(src, b.context.dir.resolve())
            s = Source(src, rel, src.is_dir())
            out.append(context_digest([s], None, None, b.file_digests))  # the bind shows every file
            continue
        origin = _bind_origin(b, m)
        if isinstance(origin, Path):
            src = confined_context_path(origin, m.source or ".")
            out.append(context_digest([Source(src, os.path.relpath(src, origin.resolve()), src.is_dir())], None,
                                      None, b.file_digests))
        elif origin.index < 0:
            out.append("image:" + origin.chain)
        else:
            out.append(b.tree_digest(origin, [m.source or "/"]))
    return out


def build_mounts(b: "Builder", st: StageState, step: RunStep) -> Mounts:
    """The binds for ``step``'s mounts (kept in this one function: the sandbox's BindSpec is its contract).
    Cache mounts are held from here on (``sharing=locked`` waits here for its instance): the
    caller calls ``release()`` on the result once the RUN is over; on an error they are let go here."""
    out = Mounts()
    try:
        _add_mounts(b, step, out)
    except BaseException:
        out.release()
        raise
    return out


def _cache_dir(b: "Builder", m: RunMount, out: Mounts) -> Path:
    """The instance a cache mount binds, chosen by its ``sharing`` before the sandbox runs (BuildKit
    mount.go getRefCacheDir); two mounts of one id in one RUN get one instance, as BuildKit's
    per-exec ``cacheMounts`` map gives them."""
    name = mount_name(m.id or m.target)
    for h in out.held:
        if h.path.name.split("-")[0] == name:
            return h.path
    held = acquire(b.root / "cache-mounts", name, m.sharing)
    out.held.append(held)
    return held.path


def _add_mounts(b: "Builder", step: RunStep, out: Mounts) -> None:
    for m in step.mounts:
        if m.type == "secret":
            value = secret_value(b, m)
            if value is None:
                continue
            if m.env:
                out.env.append(f"{m.env}={value.decode(errors='replace')}")
            if not m.target:
                continue
            # the bytes go to the sandbox, which keeps them in memory (a tmpfs of the RUN's own)
            out.binds.append(BindSpec("", m.target, readonly=True, type="secret", data=value,
                                      mode=m.mode if m.mode is not None else 0o400, uid=m.uid or 0, gid=m.gid or 0))
        elif m.type == "cache":
            cdir = _cache_dir(b, m, out)
            if m.uid is not None or m.gid is not None or m.mode is not None:
                # BuildKit mounts /cache of a scratch state made with these ids and mode
                # (convert_runmount.go:134-136); made once, when the cache is new
                cdir = cdir / "cache"
                if not cdir.is_dir():
                    b.rt.call(make_cache_dir, str(cdir), m.uid or 0, m.gid or 0,
                              m.mode if m.mode is not None else 0o755)
            out.binds.append(BindSpec(str(cdir), m.target, readonly=False, shared=True))
        elif m.type == "tmpfs":
            out.binds.append(BindSpec("", m.target, type="tmpfs"))
        elif m.type == "bind" and (m.from_stage is not None or m.from_image):
            origin = _bind_origin(b, m)
            if isinstance(origin, Path):  # a --build-context directory
                out.binds.append(BindSpec(m.source or ".", m.target, readonly=m.readonly, within=str(origin)))
                continue
            oc = b.container(origin)
            out.extra.append((oc.driver, oc.key))
            out.binds.append(BindSpec(m.source or "/", m.target, readonly=m.readonly,
                                      within=snapshot_root_path(str(b.rt.snapshots_root), oc.driver, oc.key)))
        elif m.type == "bind":
            out.binds.append(BindSpec(str(confined_context_path(b.context.dir, m.source or ".")), m.target,
                                      readonly=m.readonly))
        elif m.type == "ssh":
            if m.required:
                raise BuildError("ssh mounts are not supported")
