"""`bale bud`: run a Dockerfile's step graph with the sandbox and snapshotter.

``Builder`` is the session of one build: options, store, runtime, the build
context and the state of each stage. The stage scheduler
(``builder.build.scheduler``) runs stages in dependency order and each step
through one executor module in ``builder.build.steps``; the layer cache and
its keys are ``builder.build.cache``. Each stage creates its working snapshot
only when a step needs the filesystem, so a run of cache hits touches no disk.
A filesystem step makes one layer (none if nothing changed); a config step
adds a history entry.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from builder.build import scheduler
from builder.build.cache import DIGESTS_DB, FileDigests, LayerCache, step_key
from builder.build.context import Context, open_context
from builder.build.export import export_filesystem
from builder.build.options import BuildOptions, OutputSpec
from builder.build.state import StageState, Streamed
from builder.errors import BuildError, UsageError
from builder.image.commit import Layer, history_entry, write_image
from builder.image.imagenames import store_name
from builder.image.oci import Descriptor, ImageConfig, Platform
from builder.image.pull import push_record
from builder.image.remotecache import RemoteCache
from builder.image.transports import parse_location
from builder.sandbox.userns import cleaning_up
from builder.scripted import base_layers, commit_layer, container_over, ensure_image, source_date_epoch, squash_layers
from builder.workspace import snapshots, treedigest
from builder.workspace.container import ContainerState
from frontend.dockerignore import Matcher, load_ignore
from frontend.graph import build_graph
from frontend.steps import BaseInfo, ConfigStep, Stage, Step, StepGraph

if TYPE_CHECKING:
    from builder.image.store import ImageRecord
    from builder.progress import Progress
    from builder.workspace.runtime import Runtime
    from builder.workspace.workspace import Workspace

log = logging.getLogger("bale")
COMMENT = "bale.dockerfile.v0"


@dataclass
class BuildResult:
    image_id: str
    manifest_digest: str
    record: "ImageRecord | None"


class _Log:
    """buildah-style step lines on stderr (nothing with --quiet)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.lock = threading.Lock()

    def __call__(self, text: str) -> None:
        if not self.quiet:
            with self.lock:
                print(text, file=sys.stderr, flush=True)


class Builder:
    def __init__(self, ws: "Workspace", opts: BuildOptions, progress: "Progress | None" = None) -> None:
        self.ws, self.opts = ws, opts
        self.progress = progress  # pull progress of base images (None: none shown)
        self.store = ws.store
        self.root = Path(ws.root)
        self.rt: "Runtime" = ws.runtime(opts.isolation)
        self.say = _Log(opts.quiet)
        self.epoch = opts.timestamp if opts.timestamp is not None else source_date_epoch()
        self.platform = Platform.parse(opts.platform) if opts.platform else Platform.host()
        self.states: dict[int, StageState] = {}
        self.containers: list[ContainerState] = []
        self.lock = threading.Lock()
        self._bases: dict[str, "ImageRecord"] = {}
        remote = RemoteCache.from_flags(self.store, list(opts.cache_from), opts.cache_to, opts.registry,
                                        str(self.platform)) if opts.layers else None
        self.cache = LayerCache(self.store, self.root, layers=opts.layers, no_cache=opts.no_cache, remote=remote)
        self.file_digests = FileDigests(self.root / DIGESTS_DB)
        self._trees: dict[tuple[str, tuple[str, ...]], str] = {}
        self.filename = "Dockerfile"
        self.ignore = Matcher([])
        self.base_history = 0

    # --- base images ---
    def base_image(self, ref: str, platform: str | None = None) -> "ImageRecord":
        """The store image for FROM/--from ``ref`` (a --build-context docker-image:// first),
        pulled as --pull says. ``platform`` (``os/arch[/variant]``: a FROM --platform, as the
        frontend expanded it) picks the entry of a manifest list; None means the build's
        --platform, else this machine's if the store or the registry has it, else the store's (BuildKit
        dockerfile2llb/convert.go dispatchFrom: ``platform := d.platform``, else the target
        platform, is the ResolveImageConfig and llb.Image platform). Remembered per (ref, platform)."""
        named = self.opts.build_contexts.get(ref)
        if named is not None:
            if not named.startswith("docker-image://"):
                raise UsageError(f"--build-context {ref}: FROM needs docker-image://REF, not a directory")
            ref = named[len("docker-image://"):]
        plat = platform or self.opts.platform
        memo = f"{ref}\0{plat or ''}"
        if memo not in self._bases:  # no platform asked: this machine's (BuildKit's implicit target), preferred
            self._bases[memo] = ensure_image(self.ws, ref, pull=self.opts.pull, registry=self.opts.registry,
                                             platform=plat or str(Platform.host()), quiet=True,
                                             progress=self.progress, preferred=plat is None)
        return self._bases[memo]

    def resolve_base(self, ref: str, platform: str | None) -> BaseInfo:
        rec = self.base_image(ref, platform)
        cfg, _ = base_layers(self.ws, rec)
        c = cfg.config
        return BaseInfo(list(c.get("Env") or []), c.get("WorkingDir") or "", c.get("Shell"),
                        list(c.get("OnBuild") or []))

    def image_state(self, ref: str) -> StageState:
        rec = self.base_image(ref)
        cfg, layers = base_layers(self.ws, rec)
        return StageState(-1, cfg, list(layers), ref)

    def named_state(self, name: str) -> "StageState | Path":
        """--from=NAME that is no stage: a --build-context (directory or docker-image://), else an image."""
        value = self.opts.build_contexts.get(name)
        if value is None:
            return self.image_state(name)
        if value.startswith("docker-image://"):
            return self.image_state(value[len("docker-image://"):])
        path = Path(value)
        if not path.is_dir():
            raise UsageError(f"--build-context {name}={value}: no such directory")
        return path

    # --- containers ---
    def container(self, st: StageState) -> ContainerState:
        if st.container is None:
            st.container = container_over(self.ws, self.rt, st.image, None, st.cfg, list(st.layers), save=False)
            self.containers.append(st.container)
        return st.container

    def drop_container(self, st: StageState) -> None:
        if st.container is not None:
            with contextlib.suppress(Exception):
                self.rt.call(snapshots.remove, str(self.rt.snapshots_root), st.container.driver, st.container.key)
            st.container = None

    def cleanup(self) -> None:
        """Remove the build's snapshots; also when a signal stopped the build (cleaning_up lets
        this thread start the namespace children the removal needs)."""
        with cleaning_up():
            for c in self.containers:
                with contextlib.suppress(Exception):
                    self.rt.call(snapshots.remove, str(self.rt.snapshots_root), c.driver, c.key)
        self.file_digests.close()

    def tree_digest(self, src: StageState, patterns: list[str]) -> str:
        """Digest of what ``patterns`` select in ``src``'s filesystem, computed in the namespace
        (treedigest.subtree_digest) once per (filesystem chain, patterns) and remembered in the
        digests database: the chain is content-addressed, so the digest cannot go stale. A new
        chain's files go through the stat-keyed file digests of that database (only files its
        new layers hold are read)."""
        memo = (src.chain, tuple(patterns))
        with self.lock:
            if memo in self._trees:
                return self._trees[memo]
        key = hashlib.sha256(json.dumps(list(memo)).encode()).hexdigest()
        value = self.file_digests.tree_get(key)
        if value is None:
            c = self.container(src)
            value = self.rt.call(treedigest.subtree_digest, str(self.rt.snapshots_root), c.driver, c.key,
                                 list(patterns), str(self.root / DIGESTS_DB))
            self.file_digests.tree_put(key, value)
        with self.lock:
            self._trees[memo] = value
        return value

    # --- layers, history and the cache ---
    def commit_step(self, st: StageState) -> Layer | None:
        c = self.container(st)
        layer: Layer | None = commit_layer(self.ws, self.rt, c, compression=self.opts.compression,
                                           level=self.opts.compression_level, image_format=self.opts.image_format,
                                           epoch=self.epoch)
        if layer is not None:
            self.rt.call(snapshots.commit, str(self.rt.snapshots_root), c.driver, c.key, layer.diff_id.split(":")[1])
            st.layers.append(layer)
            c.created_paths = []  # until a layer is committed, the empty mountpoints stay in the upper
        return layer

    def last_use(self, st: StageState, step: Step) -> bool:
        """Whether nothing reads the stage's filesystem after ``step``: no filesystem step follows
        it in its stage and no other stage starts from or reads this one. Then a COPY's layer may
        be written without copying (scripted.copy_plan_layer)."""
        graph: StepGraph | None = getattr(self, "graph", None)
        stage = graph.stages.get(st.index) if graph is not None else None
        if graph is None or stage is None:
            return False
        at = next((i for i, s in enumerate(stage.steps) if s is step), None)
        if at is None or any(not isinstance(s, ConfigStep) for s in stage.steps[at + 1:]):
            return False
        return not any(st.index in other.deps for other in graph.stages.values() if other is not stage)

    def history(self, st: StageState, text: str, empty: bool) -> None:
        st.cfg.history.append(history_entry(text, empty_layer=empty, timestamp=self.epoch, comment=COMMENT))

    def fs_step(self, st: StageState, kind: str, text: str, key_fields: Callable[[], Mapping[str, object]],
                run: Callable[[], "Streamed | None"]) -> bool:
        """A filesystem step through the cache; returns whether it was a cache hit.
        ``key_fields`` is called only when the cache is on (so nothing is hashed otherwise).
        ``run`` changes the stage's snapshot, which is then committed, or returns the layer it
        made without it (Streamed: the snapshot is dropped)."""
        key = step_key(kind, st.chain, key_fields()) if self.cache.enabled else ""
        hit = self.cache.get(key) if key else None
        if hit is not None:
            layer = hit[0]
            if layer is not None:
                st.layers.append(layer)
                self.drop_container(st)  # its snapshot lacks the cached layer
            self.history(st, text, layer is None)
            self.say("--> Using cache")
            return True
        done = run()
        if isinstance(done, Streamed):  # the layer is made: the snapshot lacks it
            made = done.layer
            if made is not None:
                st.layers.append(made)
                self.drop_container(st)
        else:
            made = self.commit_step(st)
        self.history(st, text, made is None)
        if key:
            self.cache.put(key, made)
        return False

    # --- the build ---
    def destinations(self) -> tuple[list[str], list[str]]:
        """The store names and the other locations (docker://, oci:, ...) ``-t`` names; a
        UsageError for a name that is not valid, so build() checks them before any step runs
        (as Docker's "invalid reference format" comes before the build)."""
        local_names: list[str] = []
        remote: list[str] = []
        for t in self.opts.tags:
            if t.startswith(("docker://", "oci:", "oci-archive:", "docker-archive:", "docker-daemon:")):
                parse_location(t)
                remote.append(t)
            else:
                local_names.append(store_name(t))
                if self.opts.push:
                    parse_location("docker://" + t)
                    remote.append("docker://" + t)
        return local_names, remote

    def build(self) -> BuildResult:
        self.destinations()
        self.context: Context = open_context(self.opts.context, self.opts.dockerfile, self.store.tmp_dir)
        try:
            self.filename = self.context.dockerfile_name
            self.ignore = load_ignore(self.context.dockerfile_path, self.context.dir, self.opts.ignorefile,
                                      unpacked=self.context.temp is not None)
            graph = build_graph(self.context.dockerfile_text or "", filename=self.filename,
                                build_args=dict(self.opts.build_args), target=self.opts.target,
                                platform=str(self.platform), build_platform=str(Platform.host()),
                                resolve_base=self.resolve_base)
            self.graph = graph
            for w in graph.warnings:
                log.warning("%s", w)
            scheduler.run_graph(self, graph)
            return self.finish(graph)
        finally:
            self.cleanup()
            self.context.cleanup()

    def finish(self, graph: StepGraph) -> BuildResult:
        st = self.states[graph.target]
        opts = self.opts
        cfg = st.cfg
        if opts.platform:  # an explicit target platform names the image's, whatever its stage's FROM --platform
            target_platform(cfg, self.platform)
        if opts.labels:
            cfg.config["Labels"] = {**(cfg.config.get("Labels") or {}), **opts.labels}
        if opts.env or opts.unsetenv:  # buildah bud --env / --unsetenv: the final image's Env
            env = {k: v for k, _, v in (e.partition("=") for e in cfg.config.get("Env") or [])}
            env.update(opts.env)
            cfg.config["Env"] = [f"{k}={v}" for k, v in env.items() if k not in opts.unsetenv]
        layers = st.layers
        if opts.squash:
            layers = self.squash(st, graph)
        local_names, remote = self.destinations()
        rec = write_image(self.store, cfg, layers, image_format=opts.image_format, names=local_names,
                          timestamp=self.epoch, annotations=opts.annotations)
        self.say(f"COMMIT {', '.join(local_names) or rec.id}")
        digest = rec.manifest_digest
        for dest in remote:
            res = push_record(self.ws, rec, dest, registry=opts.registry, image_format=opts.image_format)
            digest = res.manifest_digest
        for out in opts.outputs:
            self.export(rec, out, local_names)
        if opts.iidfile:
            Path(opts.iidfile).write_text(rec.id)
        if opts.digestfile:
            Path(opts.digestfile).write_text(digest)
        result = BuildResult(rec.id, rec.manifest_digest, rec)
        if not local_names and (remote or opts.outputs):
            self.store.remove_image(rec)  # a pure push or export leaves nothing behind
            if not opts.layers:
                self.store.gc()
        return result

    def export(self, rec: "ImageRecord", out: OutputSpec, names: list[str]) -> None:
        if out.type in ("oci", "oci-archive", "docker-archive"):
            ref = names[0].rsplit(":", 1)[1] if names and out.type != "docker-archive" else \
                (names[0] if names else "")
            dest = f"{out.type}:{out.dest}" + (f":{ref}" if ref else "")
            push_record(self.ws, rec, dest, image_format="docker" if out.type == "docker-archive" else "oci")
        elif out.type == "registry":
            push_record(self.ws, rec, "docker://" + out.dest, registry=self.opts.registry)
        elif out.type in ("local", "tar"):
            self.export_fs(rec, out)
        else:
            raise UsageError(f"--output type={out.type} is not supported")

    def export_fs(self, rec: "ImageRecord", out: OutputSpec) -> None:
        """The image's filesystem, flattened, into a directory (local) or a tar file (tar)."""
        export_filesystem(self.rt, self.store, rec, out)

    def squash(self, st: StageState, graph: StepGraph) -> list[Layer]:
        """buildah's bud --squash: the layers this build added become one; the base's stay."""
        stage = graph.stages[graph.target]
        base = self.base_layer_count(stage)
        merged = squash_layers(self.ws, self.rt, st.layers[:base], st.layers[base:],
                               compression=self.opts.compression, level=self.opts.compression_level,
                               image_format=self.opts.image_format, epoch=self.epoch)
        hist = [h for h in st.cfg.history[:self.base_history]]
        st.cfg.history = hist + [history_entry("bale bud --squash", empty_layer=merged is None,
                                               timestamp=self.epoch, comment=COMMENT)]
        return st.layers[:base] + ([merged] if merged else [])

    def base_layer_count(self, stage: Stage) -> int:
        if stage.base_stage is not None:
            return self.base_layer_count(self.graph.stages[stage.base_stage])
        if stage.base_image is None:
            return 0
        cfg, layers = base_layers(self.ws, self.base_image(stage.base_image, stage.platform))
        self.base_history = len(cfg.history)
        return len(layers)


def target_platform(cfg: ImageConfig, plat: Platform) -> None:
    """Set the final image's ``os``/``architecture`` to the build's explicit --platform, and its
    ``variant`` when the target has one or the OS/architecture changed (BuildKit
    dockerfile2llb/convert.go finalizeResultImage: ``if !dctx.platformOpt.implicitTarget``
    overwrites ``target.image.OS``/``Architecture``/``Variant``), in place."""
    same = cfg.os == plat.os and cfg.architecture == plat.architecture
    cfg.os, cfg.architecture = plat.os, plat.architecture
    if plat.variant or not same:
        cfg.variant = plat.variant


def build(ws: "Workspace", opts: BuildOptions, progress: "Progress | None" = None) -> BuildResult:
    """Build ``opts`` in ``ws``; ``progress`` reports base-image pulls (builder.progress.Progress)."""
    b = Builder(ws, opts, progress)
    return b.build()


__all__ = ["Builder", "BuildResult", "build", "BuildError"]
