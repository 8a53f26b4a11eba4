"""The scripted-build verbs (buildah's from/run/copy/add/config/commit/rm/mount)
as library calls over a working container: each takes the Workspace, the
container's name and the verb's options (builder/options.py). The CLI in
builder/cli/commands/containers.py only turns flags into these; the helpers
below them (container_over, commit_layer, run_process, ...) are shared with
the Dockerfile builder."""
from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from builder.emulation import check_can_run
from builder.errors import BaleError, ContainerError, ImageNotFound, RunFailed, UsageError
from builder.image import configedit as ce
from builder.image.imagenames import lookup_candidates, store_name
from builder.image.oci import Descriptor, ImageConfig, Platform, layer_media_type, parse_config
from builder.lazyimport import lazy
from builder.log import log
from builder.workspace import prepare as snapshot_prepare
from builder.workspace.container import ContainerRegistry, ContainerState, new_container_id
from builder.workspace.runtime import StoreBlobOpener

if TYPE_CHECKING:
    from builder.build import copier
    from builder.image import commit as image_commit
    from builder.image import layerblob
    from builder.image import pull as image_pull
    from builder.image.commit import Layer
    from builder.options import CommitOptions, ConfigOptions, CopyOptions, FromOptions, RunOptions
    from builder import options
    from builder.sandbox import spec as sandbox_spec
    from builder.workspace import snapshots
    from builder.workspace.workspace import Workspace
    from snapshotter import copylayer
    from builder.image.registry.options import RegistryOptions
    from builder.workspace.runtime import Runtime
    from builder.image.store import ImageRecord
    from frontend import dockerignore
else:  # the pull/push stack (transports, registry client, docker daemon, signatures): imported at
    # the first pull or push, so `bale from scratch`, run, copy and config never load it; the copy,
    # commit and snapshot-worker stacks at the first verb that needs them (`bale from scratch`
    # needs none: start-up, issue 10; tests/cli/test_startup_imports.py). A function handed to
    # Runtime.call is looked up here (so imported) before the call forks.
    image_pull = lazy("builder.image.pull")
    copier, snapshots = lazy("builder.build.copier"), lazy("builder.workspace.snapshots")
    image_commit, layerblob = lazy("builder.image.commit"), lazy("builder.image.layerblob")
    sandbox_spec, dockerignore = lazy("builder.sandbox.spec"), lazy("frontend.dockerignore")
    options, copylayer = lazy("builder.options"), lazy("snapshotter.copylayer")



# --- helpers -----------------------------------------------------------------
def runtime_for(ws: "Workspace", isolation: str | None = None, driver: str | None = None) -> "Runtime":
    return ws.runtime(isolation, driver)


def _runtime_of(ws: "Workspace", state: ContainerState) -> "Runtime":
    return ws.runtime(state.isolation, state.driver)


def find_local_image(ws: "Workspace", image: str) -> "ImageRecord | None":
    """A store image by id, by the name as given, or by the names a short name stands for."""
    store = ws.store
    for cand in lookup_candidates(image):
        rec = store.find_image(cand)
        if rec is not None:
            return rec
    return None


def ensure_image(ws: "Workspace", image: str, *, pull: str = "missing", registry: "RegistryOptions | None" = None,
                 platform: str | None = None, quiet: bool = True, progress: "Any" = None,
                 preferred: bool = False) -> "ImageRecord":
    """The image in the store, pulled first as the pull policy says (``progress``: a
    builder.progress.Progress for the pull). A store image of another platform than
    ``platform`` (``os/arch[/variant]``) is pulled again for it; with ``preferred`` the
    platform is only a preference (a Dockerfile's implicit target: this machine's): when
    that pull fails or --pull=never, the store's image of another platform is taken."""
    policy = {"true": "always", "false": "missing"}.get(pull.lower(), pull.lower())
    if policy not in ("always", "missing", "never", "newer", "ifmissing", "ifnewer"):
        raise UsageError(f"invalid pull policy {pull!r}: expected always, missing, never or newer")
    rec = None if policy == "always" else find_local_image(ws, image)
    other = None
    if rec is not None and platform and not _is_platform(ws, rec, platform):
        other, rec = rec, None  # a store image of another platform: pull the one asked for
    if rec is not None:
        return rec
    if policy == "never":
        if other is not None and preferred:
            return other
        if other is not None:
            raise ImageNotFound(f"image {image}: the local store has it for another platform than {platform} "
                                "and --pull=never")
        raise ImageNotFound(f"image {image}: not in the local store and --pull=never")
    if progress is not None:
        progress.log(f"Pulling {image}" + (f" for {platform}" if platform else ""))
    try:
        return image_pull.pull_image(ws, image, registry=registry, platform=platform, quiet=quiet, progress=progress)
    except BaleError:  # not found, unreachable, a reference that names no registry image (an id)
        if other is not None and preferred:
            return other
        raise


def _is_platform(ws: "Workspace", rec: "ImageRecord", platform: str) -> bool:
    """Whether the store image ``rec`` is for ``platform`` (OS/ARCH[/VARIANT])."""
    _, man = ws.store.manifest_of(rec)
    cfg = parse_config(ws.store.read_blob(man.config.digest))
    return Platform.parse(platform).matches(Platform(cfg.os or "linux", cfg.architecture, cfg.variant))


def base_layers(ws: "Workspace", rec: "ImageRecord") -> tuple[ImageConfig, list[Layer]]:
    cfg, layers = image_commit.image_layers(ws.store, rec)
    return cfg, list(layers)


def layer_openers(ws: "Workspace", layers: list[Layer]) -> list[tuple[str, Any]]:
    return [(l.layer_id, StoreBlobOpener(str(ws.root), l.digest, l.media_type)) for l in layers]


def unpack_layers(ws: "Workspace", rt: "Runtime", layers: list[Layer]) -> None:
    work = layer_openers(ws, layers)
    if work:
        rt.call(snapshots.ensure_layers, str(rt.snapshots_root), rt.driver_name, work)


# --- from --------------------------------------------------------------------
def new_container(ws: "Workspace", image: str, *, name: str | None = None, pull: str = "missing",
                  registry: "RegistryOptions | None" = None, platform: str | None = None,
                  isolation: str | None = None, quiet: bool = True, save: bool = True) -> ContainerState:
    """A working container over ``image`` (or ``scratch``): layers unpacked, snapshot prepared."""
    if image == "scratch":
        plat = Platform.parse(platform) if platform else Platform.host()
        cfg = ImageConfig(architecture=plat.architecture, os=plat.os, variant=plat.variant,
                          config={"Env": [f"PATH={ce.DEFAULT_PATH}"]})
        image_id: str | None = None
        layers: list[Layer] = []
    else:
        rec = ensure_image(ws, image, pull=pull, registry=registry, platform=platform, quiet=quiet)
        cfg, layers = base_layers(ws, rec)
        image_id = rec.id
        image = rec.names[0] if rec.names and "@" not in image and not _looks_like_id(image) else image
    return container_over(ws, runtime_for(ws, isolation), image, image_id, cfg, layers, name=name, save=save)


def container_over(ws: "Workspace", rt: "Runtime", image: str, image_id: str | None, cfg: ImageConfig,
                   layers: list[Layer], *, name: str | None = None, save: bool = True) -> ContainerState:
    """A container over explicit layers (a Dockerfile stage's state), snapshot prepared.
    ``save`` records it among the working containers (`bale containers`)."""
    reg = ContainerRegistry(ws.root)
    state = ContainerState(name=reg.new_name(image, name) if save else (name or "build-" + new_container_id()[:12]),
                           id=new_container_id(), image=image, image_id=image_id, layers=list(layers),
                           config=cfg.to_json(), driver=rt.driver_name, isolation=rt.isolation,
                           base_history_len=len(cfg.history))
    if save:
        reg.save(state)  # recorded first, so `bale rm` can clean up whatever follows
    try:
        if layers:
            unpack_layers(ws, rt, layers)
            rt.call(snapshot_prepare.prepare, str(rt.snapshots_root), rt.driver_name, state.key, layer_openers(ws, layers))
        else:  # scratch: see _prepare_empty
            _prepare_empty(rt, state.key)
    except BaseException:
        with contextlib.suppress(Exception):
            rt.call(snapshots.remove, str(rt.snapshots_root), rt.driver_name, state.key)
        if save:
            reg.remove(state)
        raise
    return state


def _prepare_empty(rt: "Runtime", key: str) -> None:
    """An empty snapshot (FROM scratch) made by this process, without the user namespace: the
    drivers' prepare of no layers only makes directories and small records (overlay: upper, work,
    merged, empty, layers; native: rootfs, layers, index.json), and every mapping bale makes maps
    the namespace's root to this process's uid (0->getuid(): sandbox/idmap.py), with the same
    umask, so they get the owner and modes a namespace worker would give them. Saves starting the
    namespace helper (newuidmap, newgidmap, a fork) for `bale from scratch` (issue 10).
    Raises SnapshotError."""
    snapshot_prepare.prepare(str(rt.snapshots_root), rt.driver_name, key, [])


def _looks_like_id(text: str) -> bool:
    t = text.removeprefix("sha256:")
    return len(t) >= 12 and all(c in "0123456789abcdef" for c in t)


def from_image(ws: "Workspace", image: str, opts: FromOptions | None = None) -> ContainerState:
    """`bale from` (buildah from): a working container over ``image`` (a store name or id, a
    reference pulled as ``opts.pull`` says, any transport, or ``scratch``), recorded in the store
    with the workspace's isolation and driver. Returns its state (``.name``, ``.id``).
    Raises ImageNotFound, RegistryError, UsageError (bad pull policy), SnapshotError."""
    opts = opts if opts is not None else options.FromOptions()
    return new_container(ws, image, name=opts.name, pull=opts.pull, registry=opts.registry,
                         platform=opts.platform, isolation=ws.isolation, quiet=opts.quiet)


# --- run ---------------------------------------------------------------------
def process_spec(state: ContainerState, args: list[str], *, env: list[str] = (), workdir: str | None = None,  # type: ignore[assignment]
                 user: str | None = None, network: str = "host", hostname: str | None = None,
                 mounts: list[Any] = (), stdin_data: bytes | None = None) -> Any:  # type: ignore[assignment]
    cfg = state.config.get("config") or {}
    envd = ce.env_list_to_dict(list(cfg.get("Env") or []))
    envd.setdefault("PATH", ce.DEFAULT_PATH)
    for item in env:
        k, sep, v = item.partition("=")
        if not sep:
            v = os.environ.get(k, "")
        envd[k] = v
    envd.setdefault("HOSTNAME", hostname or state.name[:63])
    return sandbox_spec.ProcessSpec(args=list(args), env=[f"{k}={v}" for k, v in envd.items()],
                       cwd=workdir or cfg.get("WorkingDir") or "/", user=user or cfg.get("User") or "",
                       hostname=hostname or "bale", network=network, mounts=list(mounts), stdin_data=stdin_data)


def run_process(ws: "Workspace", state: ContainerState, spec: Any, rt: "Runtime | None" = None,
                extra: list[tuple[str, str]] = ()) -> int:  # type: ignore[assignment]
    """Run ``spec`` in the container's snapshot; returns the exit status; remembers created mountpoints.
    ``extra``: (driver, key) of other snapshots to mount first (RUN --mount=from=)."""
    check_can_run(str(state.config.get("architecture") or ""), str(state.config.get("variant") or ""))
    rt = rt or _runtime_of(ws, state)
    result = rt.run(spec, snapshots.SnapshotRootfs(str(rt.snapshots_root), state.driver, state.key, extra))
    created = list(getattr(result, "created_paths", []) or [])
    if created:
        state.created_paths = sorted(set(state.created_paths) | set(created))
    return int(getattr(result, "status", result))


def parse_volume(text: str) -> Any:
    """``SRC:DST[:ro|rw,...]`` (buildah's -v) as a BindSpec; a bad value is a UsageError."""
    return _parse_volume(text)


def _parse_volume(text: str) -> Any:
    parts = text.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1].startswith("/"):
        raise UsageError(f"invalid --volume {text!r}: expected HOST-DIR:CONTAINER-DIR[:ro]")
    opts = parts[2].split(",") if len(parts) > 2 else []
    src = os.path.abspath(parts[0])
    if not os.path.exists(src):
        raise UsageError(f"invalid --volume {text!r}: {src} does not exist")
    return sandbox_spec.BindSpec(source=src, dest=parts[1], readonly="ro" in opts, shared=True)  # buildah run -v writes through


def _parse_mount(text: str) -> Any:
    fields = dict((kv.split("=", 1) + [""])[:2] for kv in text.split(","))
    typ = fields.get("type", "bind")
    dest = fields.get("destination") or fields.get("dst") or fields.get("target") or ""
    if not dest.startswith("/"):
        raise UsageError(f"invalid --mount {text!r}: destination must be absolute")
    ro = "ro" in fields or fields.get("readonly") in ("", "true")
    if typ == "tmpfs":
        return sandbox_spec.BindSpec(source="", dest=dest, readonly=False, type="tmpfs")
    if typ != "bind":
        raise UsageError(f"invalid --mount {text!r}: type must be bind or tmpfs")
    src = os.path.abspath(fields.get("source") or fields.get("src") or "")
    if not os.path.exists(src):
        raise UsageError(f"invalid --mount {text!r}: source {src} does not exist")
    return sandbox_spec.BindSpec(source=src, dest=dest, readonly=ro, shared=True)  # buildah run --mount writes through


def run_in(ws: "Workspace", container: str, command: list[str], opts: RunOptions | None = None) -> int:
    """`bale run` (buildah run): ``command`` (argv, no shell) in the container's rootfs, with the
    image's environment, working directory and user unless ``opts`` overrides them; isolated
    as the workspace's isolation says (else as the container was made). Returns 0; a non-zero
    exit raises RunFailed (``.status``: the exit status, 128+N for signal N) and keeps the
    container as the command left it. Raises ContainerError (no such container), UsageError."""
    opts = opts if opts is not None else options.RunOptions()
    reg = ContainerRegistry(ws.root)
    state = reg.get(container)
    if not command:
        raise UsageError("run: no command given")
    binds = [_parse_volume(v) for v in opts.volumes] + [_parse_mount(m) for m in opts.mounts]
    spec = process_spec(state, list(command), env=list(opts.env), workdir=opts.workdir, user=opts.user,
                        network=opts.network, hostname=opts.hostname, mounts=binds)
    rt = runtime_for(ws, ws.isolation or state.isolation, state.driver)
    with reg.locked(state.name):
        status = run_process(ws, state, spec, rt)
        state.pending_history.append({"created_by": "/bin/sh -c " + shlex.join(command), "run": True})
        reg.save(state)
    if status != 0:
        raise RunFailed(f"run in {state.name}: {shlex.join(command)}: exited with status {status}"
                        if status < 128 else
                        f"run in {state.name}: {shlex.join(command)}: killed by signal {status - 128}", status)
    return status


# --- copy / add --------------------------------------------------------------
def container_path_kind(rt: "Runtime", state: ContainerState, path: str) -> str | None:
    kind: str | None = rt.call(snapshots.mounted_path_kind, str(rt.snapshots_root), state.driver, state.key, path)
    return kind


def copy_plan_into(ws: "Workspace", rt: "Runtime", state: ContainerState, plan: Any,
                   chown: str | None) -> list[str]:
    """Copy ``plan`` (a builder.build.copier.CopyPlan) into the container's snapshot: directly
    (snapshotter.copytree, fed the plan's entries) unless it unpacks archives (then as a tar)."""
    if copier.direct(plan):
        done: list[str] = rt.stream_to(snapshots.copy_from_fd, str(rt.snapshots_root), state.driver, state.key,
                                       plan.dest_dir, None, chown, plan.mkdir, plan.chmod,
                                       source=lambda out: copier.write_items(plan, out))  # type: ignore[arg-type]
        return done
    warnings: list[str] = rt.stream_to(snapshots.apply_from_fd, str(rt.snapshots_root), state.driver, state.key,
                                       plan.dest_dir, None, chown, plan.mkdir, plan.chmod,
                                       source=lambda out: copier.write_tar(plan, out))  # type: ignore[arg-type]
    return warnings  # already logged where they happened (snapshotter.apply)


def copy_plan_layer(ws: "Workspace", rt: "Runtime", state: ContainerState, plan: Any, chown: str | None, *,
                    compression: str = "gzip", level: int | None = None, image_format: str = "oci",
                    epoch: int | None = None) -> Any:
    """The layer ``copy_plan_into`` and ``commit_layer`` would make of ``plan`` in the clean
    snapshot of ``state``, written straight from the sources into a compressed blob
    (snapshots.copy_layer_to_fd: no file is copied, the snapshot is left as it was: the caller
    drops it). Returns the Layer, or None when it changes nothing. Raises NotStreamable when only
    the copy can make it (the blob is then discarded), else what the copy would raise."""
    if not copier.direct(plan) or state.created_paths or plan.mkdir != plan.dest_dir:
        raise copylayer.NotStreamable("not a plain directory copy into a clean snapshot")

    def source(out: Any) -> None:
        copier.write_items(plan, out)
        out.write(snapshots.PLAN_END)
    return stream_layer(ws, rt, snapshots.copy_layer_to_fd, str(rt.snapshots_root), state.driver, state.key,
                        plan.dest_dir, None, chown, plan.chmod, int(time.time()), epoch, source=source,
                        compression=compression, level=level, image_format=image_format)


def stream_layer(ws: "Workspace", rt: "Runtime", fn: Any, *args: Any, source: Any, compression: str,
                 level: int | None, image_format: str) -> Any:
    """Store the layer tar ``fn(out_fd, in_fd, *args)`` writes in the namespace (``source``
    feeding its input) as a compressed blob: the Layer, None for a tar without entries.
    ``fn`` returns "" when its tar is whole, else why not: NotStreamable, the blob discarded."""
    store = ws.store

    def sink(fh: Any, settle: Any) -> Any:
        def check() -> None:
            why = settle()
            if why:
                raise copylayer.NotStreamable(why)
        return layerblob.store_layer(fh, store, compression, level, settle=check)
    got = rt.stream_through(fn, *args, source=source, sink=sink)
    if got is None:
        return None
    digests, desc = got
    d = Descriptor(layer_media_type(compression, image_format == "docker"), desc.digest, desc.size)
    store.set_diff_id(digests.diff_id, d)
    return image_commit.Layer(d, digests.diff_id)


def absolute_dest(state: ContainerState, dest: str | None) -> str:
    workdir = (state.config.get("config") or {}).get("WorkingDir") or "/"
    if not dest:
        return workdir.rstrip("/") + "/"
    if dest.startswith("/"):
        return dest
    joined = posixpath.join(workdir, dest)
    return joined + "/" if dest.endswith("/") and not joined.endswith("/") else joined


def copy_into(ws: "Workspace", container: str, sources: list[str], dest: str | None,
              opts: CopyOptions | None = None) -> None:
    """`bale copy` / `bale add` (buildah copy/add): ``sources`` (paths in ``opts.contextdir``,
    URLs with ``opts.add``, or paths in ``opts.copy_from``) to ``dest`` in the container
    (relative to its working directory; None: the working directory), with Dockerfile COPY's
    rules for directories, trailing slashes and wildcards. Raises UsageError (a source outside
    the context, bad --chmod), ContainerError, RegistryError (URL fetch), SnapshotError."""
    opts = opts if opts is not None else options.CopyOptions()
    reg = ContainerRegistry(ws.root)
    state = reg.get(container)
    rt = _runtime_of(ws, state)
    chown, add, checksum = opts.chown, opts.add, opts.checksum
    mode = copier.parse_chmod(opts.chmod)
    if opts.copy_from:
        return _copy_from(ws, state, rt, opts.copy_from, sources, dest, mode, chown)
    context = Path(opts.contextdir or os.getcwd())
    rels = []
    for s in sources:
        if add and copier.is_url(s):
            rels.append(s)
            continue
        absolute = Path(os.path.abspath(s if os.path.isabs(s) else context / s))
        ctx = context.resolve()
        if absolute != ctx and ctx not in absolute.parents:
            raise UsageError(f"copy source {s}: outside the context directory {context} (use --contextdir)")
        rels.append(os.path.relpath(absolute, ctx))
    resolved = copier.resolve_sources(context, rels, add=add)
    if checksum and not any(s.url for s in resolved):
        raise UsageError("--checksum applies only to URL sources")
    with reg.locked(state.name):
        for src in resolved:
            if src.url:
                copier.fetch_url(src, ws.store.tmp_dir, checksum)
        target = absolute_dest(state, dest)
        source_excluded = None
        if opts.excludes:  # COPY --exclude: files matching by name, and paths inside directory sources
            source_excluded = dockerignore.Matcher(list(opts.excludes))
            resolved = [s for s in resolved if s.is_dir or not source_excluded(os.path.basename(s.rel))]
        if opts.parents:  # COPY --parents: each source keeps its path relative to the context
            plans = []
            for src in resolved:
                sub = os.path.dirname(src.rel) if not src.is_dir else src.rel
                d = target.rstrip("/") + "/" + sub if sub not in ("", ".") else target
                plans.append(copier.plan_copy([src], d.rstrip("/") + "/", "dir", chmod=mode))
        else:
            plans = [copier.plan_copy(resolved, target, container_path_kind(rt, state, target), chmod=mode)]
        plans[-1].temp_files = [s.path for s in resolved if s.url]
        try:
            for plan in plans:
                plan.source_excluded = source_excluded
                copy_plan_into(ws, rt, state, plan, chown)
        finally:
            for plan in plans:
                plan.cleanup()
        verb = "ADD" if add else "COPY"
        state.pending_history.append({"created_by": f"/bin/sh -c #(nop) {verb} {' '.join(sources)} in {target}"})
        reg.save(state)


def _copy_from(ws: "Workspace", state: ContainerState, rt: "Runtime", source: str, paths: list[str],
               dest: str | None, mode: int | None, chown: str | None) -> None:
    """buildah copy --from: paths inside another working container, or an image."""
    reg = ContainerRegistry(ws.root)
    temp = None
    try:
        src = reg.get(source)
    except ContainerError:
        src = temp = new_container(ws, source, save=False)
    try:
        with reg.locked(state.name):
            target = absolute_dest(state, dest)
            rt.call(snapshots.copy_between, str(rt.snapshots_root), src.driver, src.key, str(rt.snapshots_root),
                    state.driver, state.key, paths, target, mode, chown, False)
            state.pending_history.append({"created_by": f"/bin/sh -c #(nop) COPY --from={source} {' '.join(paths)}"
                                                        f" in {target}"})
            reg.save(state)
    finally:
        if temp is not None:
            with contextlib.suppress(Exception):
                rt.call(snapshots.remove, str(rt.snapshots_root), temp.driver, temp.key)


# --- config ------------------------------------------------------------------
def _kv(text: str, what: str) -> tuple[str, str | None]:
    """K=V sets, K- removes (buildah's convention)."""
    if "=" in text:
        k, v = text.split("=", 1)
        return k, v
    if text.endswith("-"):
        return text[:-1], None
    raise UsageError(f"invalid {what} {text!r}: expected KEY=VALUE or KEY-")


_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _expand_config_env(value: str, config: dict[str, Any]) -> str:
    """``$VAR``/``${VAR}`` in a ``config --env`` value, from the image's own environment, never
    bale's (buildah's config.go expands with os.Expand over the builder's Env); an unset
    variable becomes empty, with a warning."""
    env = ce.env_list_to_dict(list(config.get("Env") or []))

    def one(m: "re.Match[str]") -> str:
        name = m.group(1) or m.group(2)
        if name not in env:
            log.warning("config --env: $%s is not set in the image's environment: expanded to nothing", name)
        return env.get(name, "")
    return _VAR.sub(one, value)


def apply_config_options(cfg: ImageConfig, opts: ConfigOptions) -> list[str]:
    """Apply `bale config` options to ``cfg``; returns history notes of what changed."""
    c = cfg.config
    notes: list[str] = []
    shell = c.get("Shell")
    if opts.shell:
        c["Shell"] = ce.parse_command(opts.shell, None, "--shell")
        shell = c["Shell"]
        notes.append(f"SHELL {c['Shell']}")
    if opts.entrypoint is not None:
        c["Entrypoint"] = ce.parse_command(opts.entrypoint, shell, "--entrypoint") or None
        notes.append(f"ENTRYPOINT {c['Entrypoint']}")
    if opts.cmd is not None:
        c["Cmd"] = ce.parse_command(opts.cmd, shell, "--cmd") or None
        notes.append(f"CMD {c['Cmd']}")
    for item in opts.env:
        k, v = _kv(item, "--env")
        ce.set_env(c, k, _expand_config_env(v, c)) if v is not None else ce.unset_env(c, k)
        notes.append(f"ENV {item}")
    if opts.workingdir is not None:
        c["WorkingDir"] = opts.workingdir
        notes.append(f"WORKDIR {opts.workingdir}")
    if opts.user is not None:
        c["User"] = opts.user
        notes.append(f"USER {opts.user}")
    for item in opts.labels:
        k, v = _kv(item, "--label")
        ce.set_label(c, k, v) if v is not None else ce.unset_label(c, k)
        notes.append(f"LABEL {item}")
    for port in opts.ports:
        if port.endswith("-"):
            ports = dict(c.get("ExposedPorts") or {})
            p = port[:-1] if "/" in port[:-1] else port[:-1] + "/tcp"
            ports.pop(p, None)
            c["ExposedPorts"] = ports
        else:
            ce.add_port(c, port)
        notes.append(f"EXPOSE {port}")
    for vol in opts.volumes:
        if vol.endswith("-"):
            vols = dict(c.get("Volumes") or {})
            vols.pop(vol[:-1], None)
            c["Volumes"] = vols
        else:
            ce.add_volume(c, vol)
        notes.append(f"VOLUME {vol}")
    if opts.stop_signal:
        c["StopSignal"] = ce.stop_signal(opts.stop_signal)
        notes.append(f"STOPSIGNAL {c['StopSignal']}")
    if opts.healthcheck is not None:
        ce.set_healthcheck(c, ce.healthcheck_test(opts.healthcheck, shell),
                           interval=opts.healthcheck_interval, timeout=opts.healthcheck_timeout,
                           start_period=opts.healthcheck_start_period,
                           start_interval=opts.healthcheck_start_interval,
                           retries=opts.healthcheck_retries)
        notes.append(f"HEALTHCHECK {opts.healthcheck}")
    for trig in opts.onbuild:
        c["OnBuild"] = list(c.get("OnBuild") or []) + [trig]
        notes.append(f"ONBUILD {trig}")
    if opts.author is not None:
        cfg.author = opts.author
    if opts.hostname is not None:
        c["Hostname"] = opts.hostname
    if opts.domainname is not None:
        c["Domainname"] = opts.domainname
    if opts.arch:
        cfg.architecture = opts.arch
    if opts.os:
        cfg.os = opts.os
    if opts.variant is not None:
        cfg.variant = opts.variant
    return notes


def configure(ws: "Workspace", container: str, opts: ConfigOptions) -> ContainerState:
    """`bale config` (buildah config): edit the container's image configuration (kept in the
    store with the container; written at commit) and note each edit for the history.
    Returns the updated state. Raises ContainerError, UsageError (malformed values)."""
    reg = ContainerRegistry(ws.root)
    state = reg.get(container)
    with reg.locked(state.name):
        state = reg.get(container)
        cfg = state.image_config
        notes = apply_config_options(cfg, opts)
        state.set_image_config(cfg)
        ann = dict(state.config.get("__annotations__", {}))
        for item in opts.annotations:
            k, v = _kv(item, "--annotation")
            if v is None:
                ann.pop(k, None)
            else:
                ann[k] = v
        if ann:
            state.config["__annotations__"] = ann
        for key in ("created_by", "comment", "history_comment"):
            if getattr(opts, key):
                state.config.setdefault("__history__", {})[key] = getattr(opts, key)
        for n in notes:
            state.pending_history.append({"created_by": f"/bin/sh -c #(nop) {n}", "empty_layer": True})
        reg.save(state)
    return state


# --- commit ------------------------------------------------------------------
def commit_layer(ws: "Workspace", rt: "Runtime", state: ContainerState, *, compression: str = "gzip",
                 level: int | None = None, image_format: str = "oci", epoch: int | None = None) -> Any:
    """Diff the container's snapshot into a compressed layer blob; None when nothing changed."""
    ignore = sorted(set(snapshots.SANDBOX_PATHS) | set(state.created_paths))
    store = ws.store
    got = rt.stream_from(snapshots.diff_to_fd, str(rt.snapshots_root), state.driver, state.key, ignore, epoch,
                         sink=lambda fh: layerblob.store_layer(fh, store, compression, level))
    if got is None:
        return None
    digests, desc = got
    media_type = layer_media_type(compression, image_format == "docker")
    d = Descriptor(media_type, desc.digest, desc.size)
    store.set_diff_id(digests.diff_id, d)
    return image_commit.Layer(d, digests.diff_id)


def squash_layers(ws: "Workspace", rt: "Runtime", keep: list[Any], merge: list[Any], *, compression: str,
                  level: int | None, image_format: str, epoch: int | None) -> Any:
    """One layer equal to ``merge`` applied in order over ``keep`` (None if they change nothing)."""
    base = list(keep)
    state = container_over(ws, rt, "squash", None, ImageConfig(), base, save=False)
    try:
        for l in merge:
            opener = StoreBlobOpener(str(ws.root), l.descriptor.digest, l.descriptor.media_type)
            rt.call(snapshots.apply_layer, str(rt.snapshots_root), state.driver, state.key, opener)
        return commit_layer(ws, rt, state, compression=compression, level=level, image_format=image_format,
                            epoch=epoch)
    finally:
        with contextlib.suppress(Exception):
            rt.call(snapshots.remove, str(rt.snapshots_root), state.driver, state.key)


def commit(ws: "Workspace", container: str, image: str | None, opts: CommitOptions | None = None) -> "ImageRecord":
    """`bale commit` (buildah commit): the base's layers plus one layer of what changed in the
    container (none if nothing did), its configuration and history, as an image named
    ``image`` in the store (a store name; None: unnamed) or written to a transport
    (``docker://``, ``oci:``, ``oci-archive:``, ``docker-archive:``, ``dir:``), in which case
    nothing stays in the store. Returns the image record (``.id`` the config digest,
    ``.manifest_digest``). Raises ContainerError, UsageError (docker format with zstd),
    RegistryError, SnapshotError."""
    opts = opts if opts is not None else options.CommitOptions()
    squash, timestamp, image_format = opts.squash, opts.timestamp, opts.image_format
    compression, compression_level, registry, quiet = opts.compression, opts.compression_level, opts.registry, \
        opts.quiet
    reg = ContainerRegistry(ws.root)
    state = reg.get(container)
    rt = _runtime_of(ws, state)
    epoch = timestamp if timestamp is not None else source_date_epoch()
    if image_format == "docker" and compression == "zstd":
        raise UsageError("docker format cannot carry zstd layers: use --compression gzip or --format oci")
    with reg.locked(state.name):
        cfg = state.image_config
        meta = state.config.get("__history__", {})
        annotations = dict(state.config.get("__annotations__", {}))
        cfg.extra.pop("__history__", None)
        cfg.extra.pop("__annotations__", None)
        layer = commit_layer(ws, rt, state, compression=compression, level=compression_level,
                             image_format=image_format, epoch=epoch)
        layers = list(state.layers)
        if layer is not None:
            layers.append(layer)
        if squash:  # buildah commit --squash: every layer, the base's included, as one
            one = squash_layers(ws, rt, [], layers, compression=compression, level=compression_level,
                                image_format=image_format, epoch=epoch)
            layers, layer = ([one] if one else []), one
            cfg.history = []
        created_by = meta.get("created_by") or _summary(state)
        cfg.history = list(cfg.history) + [image_commit.history_entry(created_by, empty_layer=layer is None, timestamp=epoch,
                                                         comment=meta.get("history_comment") or
                                                         meta.get("comment") or "")]
        dest_is_store, names = _commit_names(image)
        rec = image_commit.write_image(ws.store, cfg, layers, image_format=image_format, names=names if dest_is_store else [],
                          timestamp=epoch, annotations=annotations)
    if not dest_is_store and image:
        try:
            image_pull.push_record(ws, rec, image, registry=registry, image_format=image_format, quiet=quiet)
        finally:  # a commit to another location leaves nothing in the store, as buildah's does
            ws.store.remove_image(rec)
            ws.store.gc()
    return rec


def _summary(state: ContainerState) -> str:
    runs = [h["created_by"] for h in state.pending_history if h.get("run")]
    return runs[-1] if runs else "bale commit"


def source_date_epoch() -> int | None:
    """$SOURCE_DATE_EPOCH as an int, None when unset."""
    v = os.environ.get("SOURCE_DATE_EPOCH")
    if v is None or v == "":
        return None
    try:
        epoch = int(v)
        if not -62135596800 <= epoch <= 253402300799:  # RFC 3339 years 1-9999, as Go's time marshals them
            raise ValueError
        return epoch
    except ValueError:
        raise UsageError(f"invalid SOURCE_DATE_EPOCH {v!r}: expected seconds since the epoch") from None


_TRANSPORTS = ("docker://", "oci:", "oci-archive:", "docker-archive:", "dir:")


def _commit_names(image: str | None) -> tuple[bool, list[str]]:
    """Whether the destination is the local store, and the names to record there."""
    if not image:
        return True, []
    if image.startswith(_TRANSPORTS):
        return False, []
    return True, [store_name(image.removeprefix("containers-storage:"))]


# --- containers, rm, mount ---------------------------------------------------
def remove_containers(ws: "Workspace", names: list[str]) -> list[str]:
    """`bale rm`: remove working containers and their snapshots; returns their names.
    Raises ContainerError for a name that is not a working container."""
    reg = ContainerRegistry(ws.root)
    removed = []
    for n in names:
        state = reg.get(n)
        with reg.locked(state.name):
            rt = _runtime_of(ws, state)
            rt.call(snapshots.remove, str(rt.snapshots_root), state.driver, state.key)
            reg.remove(state)
        removed.append(state.name)
    return removed


def mount(ws: "Workspace", names: list[str]) -> Iterator[tuple[str, str]]:
    """`bale mount`: mount each container's snapshot in the current mount namespace and yield
    (name, host path of its root); no names: the containers mounted already. Only meaningful
    inside `bale unshare` (or as root). Raises UsageError outside it, ContainerError."""
    reg = ContainerRegistry(ws.root)
    if not names:
        for s in reg.all():
            p = Path(ws.root) / "snapshots" / "containers" / s.key / "merged"
            if os.path.ismount(p):
                yield s.name, str(p)
        return
    if os.geteuid() != 0:
        raise UsageError("mount: run it inside `bale unshare` (the mount lives in that namespace)")
    for n in names:
        state = reg.get(n)
        rt = _runtime_of(ws, state)
        yield state.name, str(snapshots.SnapshotRootfs(str(rt.snapshots_root), state.driver, state.key).setup())


def umount(ws: "Workspace", name: str) -> None:
    """`bale umount`: unmount the container's snapshot (inside `bale unshare`). Raises UsageError, ContainerError."""
    reg = ContainerRegistry(ws.root)
    state = reg.get(name)
    if os.geteuid() != 0:
        raise UsageError("umount: run it inside `bale unshare`")
    rt = _runtime_of(ws, state)
    snapshots._driver(str(rt.snapshots_root), state.driver).unmount(state.key)
