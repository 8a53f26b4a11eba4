"""`bale bud`: run a Dockerfile's step graph with the sandbox and snapshotter.

Each stage keeps its image state (config, layers, history) and creates its
working snapshot only when a step needs the filesystem, so a run of cache hits
touches no disk. A filesystem step makes one layer (none if nothing changed);
a config step adds a history entry. With ``--layers`` each layer is recorded
under a cache key chained from the base, the expanded instruction and the
digests of what COPY/ADD read, so a changed file re-runs exactly the steps after it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.image import configedit as ce
from builder.scripted import source_date_epoch
from builder.build.options import BuildOptions
from builder.image.commit import Layer, history_entry, write_image
from builder.workspace.container import BaseLayer, ContainerState
from builder.errors import BaleError, BuildError, UsageError
from builder.image.oci import Descriptor, ImageConfig, Platform

if TYPE_CHECKING:
    from builder.workspace.workspace import Workspace
    from builder.workspace.runtime import Runtime
    from builder.image.store import ImageRecord

log = logging.getLogger("bale")
COMMENT = "bale.dockerfile.v0"


@dataclass
class BuildResult:
    image_id: str
    manifest_digest: str
    record: "ImageRecord | None"


@dataclass
class StageState:
    index: int
    cfg: ImageConfig
    layers: list[Layer]
    key: str  # cache-key chain
    image: str
    container: ContainerState | None = None


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
    def __init__(self, ws: "Workspace", opts: BuildOptions) -> None:
        self.ws, self.opts = ws, opts
        self.store = ws.store
        self.rt: "Runtime" = ws.runtime(opts.isolation)
        self.say = _Log(opts.quiet)
        self.epoch = opts.timestamp if opts.timestamp is not None else source_date_epoch()
        self.platform = Platform.parse(opts.platform) if opts.platform else Platform.host()
        self.states: dict[int, StageState] = {}
        self.containers: list[ContainerState] = []
        self.lock = threading.Lock()
        self.secret_dir = Path(tempfile.mkdtemp(prefix="bale-secrets-"))
        os.chmod(self.secret_dir, 0o700)
        self._bases: dict[str, Any] = {}

    # --- base images ---
    def base_image(self, ref: str) -> "ImageRecord":
        from builder.scripted import ensure_image
        named = self.opts.build_contexts.get(ref)
        if named is not None:
            if not named.startswith("docker-image://"):
                raise UsageError(f"--build-context {ref}: FROM needs docker-image://REF, not a directory")
            ref = named[len("docker-image://"):]
        if ref not in self._bases:
            self._bases[ref] = ensure_image(self.ws, ref, pull=self.opts.pull, registry=self.opts.registry,
                                            platform=self.opts.platform, quiet=True)
        return self._bases[ref]

    def resolve_base(self, ref: str, platform: str | None) -> Any:
        from builder.scripted import base_layers
        from frontend.steps import BaseInfo
        rec = self.base_image(ref)
        cfg, _ = base_layers(self.ws, rec)
        c = cfg.config
        return BaseInfo(list(c.get("Env") or []), c.get("WorkingDir") or "", c.get("Shell"),
                        list(c.get("OnBuild") or []))

    # --- containers ---
    def container(self, st: StageState) -> ContainerState:
        from builder.scripted import container_over
        if st.container is None:
            base = [BaseLayer(l.diff_id, l.descriptor.digest, l.descriptor.media_type, l.descriptor.size)
                    for l in st.layers]
            st.container = container_over(self.ws, self.rt, st.image, None, st.cfg, base, save=False)
            self.containers.append(st.container)
        return st.container

    def drop_container(self, st: StageState) -> None:
        from builder.workspace import snapshots
        if st.container is not None:
            with contextlib.suppress(Exception):
                self.rt.call(snapshots.remove, str(self.rt.snapshots_root), st.container.driver, st.container.key)
            st.container = None

    def cleanup(self) -> None:
        from builder.workspace import snapshots
        for c in self.containers:
            with contextlib.suppress(Exception):
                self.rt.call(snapshots.remove, str(self.rt.snapshots_root), c.driver, c.key)
        shutil.rmtree(self.secret_dir, ignore_errors=True)

    # --- cache ---
    def cache_path(self, key: str) -> Path:
        return self.ws.root / "cache" / key

    def cache_get(self, key: str) -> dict | None:
        if not self.opts.layers or self.opts.no_cache:
            return None
        try:
            entry = json.loads(self.cache_path(key).read_text())
        except (OSError, ValueError):
            return None
        if entry.get("layer") and not self.store.has_blob(entry["layer"]["digest"]):
            return None
        return entry

    def cache_put(self, key: str, layer: Layer | None) -> None:
        if not self.opts.layers:
            return
        p = self.cache_path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = {"layer": layer.descriptor.to_json() if layer else None, "diff_id": layer.diff_id if layer else None}
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, p)

    # --- steps ---
    def commit_step(self, st: StageState) -> Layer | None:
        from builder.workspace import snapshots
        from builder.scripted import commit_layer
        c = self.container(st)
        layer = commit_layer(self.ws, self.rt, c, compression=self.opts.compression,
                             level=self.opts.compression_level, image_format=self.opts.image_format,
                             epoch=self.epoch)
        if layer is not None:
            self.rt.call(snapshots.commit, str(self.rt.snapshots_root), c.driver, c.key, layer.diff_id.split(":")[1])
            st.layers.append(layer)
        c.created_paths = []
        return layer

    def history(self, st: StageState, text: str, empty: bool) -> None:
        st.cfg.history.append(history_entry(text, empty_layer=empty, timestamp=self.epoch, comment=COMMENT))

    def fs_step(self, st: StageState, step: Any, key_extra: str, run: Any) -> bool:
        """A filesystem step through the cache; returns whether it was a cache hit."""
        key = _h(st.key + "\0" + step.text + "\0" + key_extra)
        hit = self.cache_get(key)
        if hit is not None:
            if hit["layer"]:
                d = Descriptor.from_json(hit["layer"])
                st.layers.append(Layer(d, hit["diff_id"]))
                self.drop_container(st)  # its snapshot lacks the cached layer
            self.history(st, step.text, not hit["layer"])
            st.key = key
            return True
        run()
        layer = self.commit_step(st)
        self.history(st, step.text, layer is None)
        self.cache_put(key, layer)
        st.key = key
        return False

    def config_step(self, st: StageState, step: Any) -> None:
        c = st.cfg.config
        for k, v in step.changes.items():
            if k == "Env":
                for item in v:
                    key, _, val = item.partition("=")
                    ce.set_env(c, key, val)
            elif k == "Labels":
                c["Labels"] = {**(c.get("Labels") or {}), **v}
            elif k == "ExposedPorts":
                for p in v:
                    ce.add_port(c, p)
            elif k == "Volumes":
                for vol in v:
                    ce.add_volume(c, vol)
            elif k == "OnBuild":
                c["OnBuild"] = list(c.get("OnBuild") or []) + v
            elif k == "Author":
                st.cfg.author = v
            elif v is None:
                c.pop(k, None)
            else:
                c[k] = v
        st.key = _h(st.key + "\0" + step.text)
        if step.mkdir:
            from builder.workspace import snapshots

            def mkdir() -> None:
                cont = self.container(st)
                self.rt.call(snapshots.make_dirs, str(self.rt.snapshots_root), cont.driver, cont.key, step.mkdir)
            # WORKDIR makes its directory (a layer only if it was missing)
            self.fs_step(st, step, "mkdir", mkdir)
            return
        self.history(st, step.text, True)

    def run_step(self, st: StageState, step: Any, graph: Any) -> None:
        from builder.scripted import process_spec, run_process
        key_extra = ""

        def run() -> None:
            c = self.container(st)
            c.config = st.cfg.to_json()
            mounts, extra = self.run_mounts(st, step)
            env = [f"{k}={v}" for k, v in step.env.items()] + self.secret_env(step)
            spec = process_spec(c, step.args, env=env, network=step.network or self.opts.network,
                                mounts=mounts, stdin_data=step.stdin if step.stdin is not None else b"")
            t0 = time.monotonic()
            status = run_process(self.ws, c, spec, self.rt, extra)
            if status != 0:
                raise BuildError(f"{self.filename}:{step.line}: RUN: {_short(step.args)}: exited with status "
                                 f"{status}" if status < 128 else
                                 f"{self.filename}:{step.line}: RUN: {_short(step.args)}: killed by signal "
                                 f"{status - 128}")
            log.debug("RUN took %.2fs", time.monotonic() - t0)
        hit = self.fs_step(st, step, key_extra, run)
        if hit:
            self.say("--> Using cache")

    def secret(self, step: Any, m: Any) -> bytes | None:
        """A --secret's value for a RUN mount; None when not given (an error if the mount requires it)."""
        spec = self.opts.secrets.get(m.id)
        if spec is None and m.required:
            raise BuildError(f"{self.filename}:{step.line}: RUN: secret {m.id} is required "
                             "but was not given with --secret")
        return spec.read() if spec is not None else None

    def secret_env(self, step: Any) -> list[str]:
        """RUN --mount=type=secret,env=VAR: the value in the command's environment only."""
        out = []
        for m in step.mounts:
            if m.type == "secret" and m.env:
                value = self.secret(step, m)
                if value is not None:
                    out.append(f"{m.env}={value.decode(errors='replace')}")
        return out

    def run_mounts(self, st: StageState, step: Any) -> tuple[list[Any], list[tuple[str, str]]]:
        """BindSpecs for the RUN's mounts, and the other snapshots they read from."""
        from builder.sandbox.spec import BindSpec
        from builder.workspace.snapshots import snapshot_root_path
        out: list[Any] = []
        extra: list[tuple[str, str]] = []
        for m in step.mounts:
            if m.type == "secret":
                value = None if m.env and not m.target else self.secret(step, m)
                if value is None:
                    continue
                path = self.secret_dir / _h(m.id)[:16]
                path.write_bytes(value)
                os.chmod(path, m.mode if m.mode is not None else 0o400)
                out.append(BindSpec(str(path), m.target, readonly=True))
            elif m.type == "cache":
                cdir = self.ws.root / "cache-mounts" / _h(m.id or m.target)[:24]
                cdir.mkdir(parents=True, exist_ok=True)
                out.append(BindSpec(str(cdir), m.target, readonly=False))
            elif m.type == "tmpfs":
                out.append(BindSpec("", m.target, type="tmpfs"))
            elif m.type == "bind" and (m.from_stage is not None or m.from_image):
                other = self.states[m.from_stage] if m.from_stage is not None else self.named_state(m.from_image)
                if isinstance(other, Path):  # a --build-context directory
                    out.append(BindSpec(m.source or ".", m.target, readonly=m.readonly, within=str(other)))
                    continue
                oc = self.container(other)
                extra.append((oc.driver, oc.key))
                out.append(BindSpec(m.source or "/", m.target, readonly=m.readonly,
                                    within=snapshot_root_path(str(self.rt.snapshots_root), oc.driver, oc.key)))
            elif m.type == "bind":
                src = _confined_context_path(self.context.dir, m.source or ".")
                out.append(BindSpec(str(src), m.target, readonly=m.readonly))
            elif m.type == "ssh":
                if m.required:
                    raise BuildError(f"{self.filename}:{step.line}: RUN: ssh mounts are not supported")
        return out, extra

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

    def copy_step(self, st: StageState, step: Any, context: Path | None = None) -> None:
        from builder.build import copier
        from builder.scripted import absolute_dest, container_path_kind, copy_plan_into
        if context is None and (step.from_stage is not None or step.from_image):
            return self.copy_from(st, step)
        context = context or self.context.dir
        excluded = self.excluder() if context == self.context.dir else None
        temp: list[Path] = []
        try:
            sources = copier.resolve_sources(context, step.sources, add=step.add, excluded=excluded) \
                if step.sources else []
        except BuildError as exc:
            raise BuildError(f"{self.filename}:{step.line}: {step.keyword}: {exc}") from None
        for inline in step.inline:
            fd, path = tempfile.mkstemp(dir=self.store.tmp_dir, prefix="heredoc-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(inline.content)
            os.chmod(path, 0o644)
            temp.append(Path(path))
            sources.append(copier.Source(Path(path), inline.name, False, mtime=self.epoch or time.time()))
        for src in sources:
            if src.url:
                copier.fetch_url(src, self.store.tmp_dir, step.checksum)
                temp.append(src.path)
        source_excluded = None
        if step.excludes:
            from frontend.dockerignore import Matcher
            source_excluded = Matcher(step.excludes)
            sources = [s for s in sources if s.is_dir or not source_excluded(os.path.basename(s.rel))]
        key_extra = _digest_sources(sources, excluded) + ":" + ",".join(step.excludes)

        def run() -> None:
            c = self.container(st)
            dest = absolute_dest(c, step.dest)
            if step.parents:
                for s in sources:
                    sub = os.path.dirname(s.rel) if not s.is_dir else s.rel
                    d = dest.rstrip("/") + "/" + sub if sub not in ("", ".") else dest
                    plan = copier.plan_copy([s], d.rstrip("/") + "/", "dir", chmod=step.chmod, excluded=excluded)
                    plan.source_excluded = source_excluded
                    copy_plan_into(self.ws, self.rt, c, plan, step.chown)
                return
            plan = copier.plan_copy(sources, dest, container_path_kind(self.rt, c, dest), chmod=step.chmod,
                                    excluded=excluded)
            plan.source_excluded = source_excluded
            copy_plan_into(self.ws, self.rt, c, plan, step.chown)
        try:
            if self.fs_step(st, step, key_extra, run):
                self.say("--> Using cache")
        finally:
            for p in temp:
                p.unlink(missing_ok=True)

    def copy_from(self, st: StageState, step: Any) -> None:
        from builder.workspace import snapshots
        if step.from_stage is not None:
            src = self.states[step.from_stage]
        else:
            named = self.named_state(step.from_image)
            if isinstance(named, Path):
                return self.copy_step(st, step, context=named)
            src = named
        key_extra = "from:" + src.key

        def run() -> None:
            sc = self.container(src)
            dc = self.container(st)
            try:
                self.rt.call(snapshots.copy_between, str(self.rt.snapshots_root), sc.driver, sc.key,
                             str(self.rt.snapshots_root), dc.driver, dc.key, step.sources, step.dest, step.chmod,
                             step.chown)
            except BuildError as exc:
                raise BuildError(f"{self.filename}:{step.line}: {step.keyword}: {exc}") from None
        if self.fs_step(st, step, key_extra, run):
            self.say("--> Using cache")

    def image_state(self, ref: str) -> StageState:
        from builder.scripted import base_layers
        rec = self.base_image(ref)
        cfg, layers = base_layers(self.ws, rec)
        return StageState(-1, cfg, [Layer(Descriptor(l.media_type, l.digest, l.size), l.diff_id) for l in layers],
                          _h("image:" + rec.manifest_digest), ref)

    def excluder(self) -> Any:
        """.dockerignore, matched against context-relative paths (None when there is none)."""
        return self.ignore if self.ignore else None

    # --- stages ---
    def start_stage(self, stage: Any) -> StageState:
        from builder.scripted import base_layers
        if stage.base_stage is not None:
            parent = self.states[stage.base_stage]
            cfg = parent.cfg.copy()
            return StageState(stage.index, cfg, list(parent.layers), _h("stage:" + parent.key), f"stage-{stage.index}")
        if stage.base_image is None:
            plat = Platform.parse(stage.platform) if stage.platform else self.platform
            cfg = ImageConfig(architecture=plat.architecture, os=plat.os, variant=plat.variant,
                              config={"Env": [f"PATH={ce.DEFAULT_PATH}"]})
            return StageState(stage.index, cfg, [], _h("scratch:" + str(plat)), "scratch")
        rec = self.base_image(stage.base_image)
        cfg, layers = base_layers(self.ws, rec)
        cfg.config.pop("OnBuild", None)  # triggers run in this build and are not inherited
        return StageState(stage.index, cfg, [Layer(Descriptor(l.media_type, l.digest, l.size), l.diff_id)
                                             for l in layers], _h("image:" + rec.manifest_digest), stage.base_image)

    def run_stage(self, graph: Any, index: int, counter: list[int], total: int) -> None:
        from frontend.steps import ConfigStep, CopyStep, RunStep
        stage = graph.stages[index]
        st = self.start_stage(stage)
        with self.lock:
            self.states[index] = st
        for step in stage.steps:
            with self.lock:
                counter[0] += 1
                n = counter[0]
            self.say(f"[{stage.label}] STEP {n}/{total}: {step.text}")
            t0 = time.monotonic()
            try:
                if isinstance(step, RunStep):
                    self.run_step(st, step, graph)
                elif isinstance(step, CopyStep):
                    self.copy_step(st, step)
                elif isinstance(step, ConfigStep):
                    self.config_step(st, step)
            except BaleError as exc:
                if str(exc).startswith(f"{self.filename}:"):
                    raise
                err = BuildError(f"{self.filename}:{step.line}: {step.keyword}: {exc}")
                err.exit_code = exc.exit_code
                raise err from None
            if not isinstance(step, ConfigStep) or step.mkdir:
                self.say(f"--> {time.monotonic() - t0:.2f}s")

    def build(self) -> BuildResult:
        from builder.build.context import open_context
        from frontend.dockerignore import Matcher, ignore_file_for
        from frontend.graph import build_graph
        self.context = open_context(self.opts.context, self.opts.dockerfile, self.store.tmp_dir)
        try:
            self.filename = self.context.dockerfile_name
            ign = ignore_file_for(self.context.dockerfile_path, self.context.dir) if self.context.dockerfile_path \
                else (self.context.dir / ".dockerignore" if (self.context.dir / ".dockerignore").is_file() else None)
            self.ignore = Matcher.from_text(ign.read_text()) if ign else Matcher([])
            build_plat = str(Platform.host())
            args = dict(self.opts.build_args)
            graph = build_graph(self.context.dockerfile_text or "", filename=self.filename, build_args=args,
                                target=self.opts.target, platform=str(self.platform), build_platform=build_plat,
                                resolve_base=self.resolve_base)
            self.graph = graph
            self.base_history = 0
            for w in graph.warnings:
                log.warning("%s", w)
            order = graph.order()
            total = sum(len(graph.stages[i].steps) for i in order)
            counter = [0]
            self.run_graph(graph, order, counter, total)
            return self.finish(graph)
        finally:
            self.cleanup()
            self.context.cleanup()

    def run_graph(self, graph: Any, order: list[int], counter: list[int], total: int) -> None:
        """Stages whose dependencies are done run in parallel (up to --jobs)."""
        done: set[int] = set()
        pending = list(order)
        with ThreadPoolExecutor(max(1, self.opts.jobs)) as pool:
            running: dict[int, Any] = {}
            while pending or running:
                for i in list(pending):
                    if graph.stages[i].deps <= done and len(running) < max(1, self.opts.jobs):
                        pending.remove(i)
                        running[i] = pool.submit(self.run_stage, graph, i, counter, total)
                if not running:
                    raise BuildError("internal error: stage dependencies cannot be satisfied")
                finished = next(iter(running))
                while True:
                    ready = [i for i, f in running.items() if f.done()]
                    if ready:
                        finished = ready[0]
                        break
                    time.sleep(0.01)
                running.pop(finished).result()
                done.add(finished)

    def finish(self, graph: Any) -> BuildResult:
        st = self.states[graph.target]
        opts = self.opts
        cfg = st.cfg
        if opts.labels:
            cfg.config["Labels"] = {**(cfg.config.get("Labels") or {}), **opts.labels}
        layers = st.layers
        if opts.squash:
            layers = self.squash(st, graph)
        local_names, remote = [], []
        for t in opts.tags:
            if t.startswith(("docker://", "oci:", "oci-archive:", "docker-archive:")):
                remote.append(t)
            else:
                from builder.image.imagenames import store_name
                local_names.append(store_name(t))
                if opts.push:
                    remote.append("docker://" + t)
        rec = write_image(self.store, cfg, layers, image_format=opts.image_format, names=local_names,
                          timestamp=self.epoch, annotations=opts.annotations)
        self.say(f"COMMIT {', '.join(local_names) or rec.id}")
        from builder.image.pull import push_record
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

    def export(self, rec: "ImageRecord", out: Any, names: list[str]) -> None:
        from builder.image.pull import push_record
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

    def export_fs(self, rec: "ImageRecord", out: Any) -> None:
        """The image's filesystem, flattened, into a directory (local) or a tar file (tar)."""
        from builder.build.export import export_filesystem
        export_filesystem(self.rt, self.store, rec, out)

    def squash(self, st: StageState, graph: Any) -> list[Layer]:
        """buildah's bud --squash: the layers this build added become one; the base's stay."""
        from builder.scripted import squash_layers
        stage = graph.stages[graph.target]
        base = self.base_layer_count(stage)
        merged = squash_layers(self.ws, self.rt, st.layers[:base], st.layers[base:],
                               compression=self.opts.compression, level=self.opts.compression_level,
                               image_format=self.opts.image_format, epoch=self.epoch)
        hist = [h for h in st.cfg.history[:self.base_history]]
        st.cfg.history = hist + [history_entry("bale bud --squash", empty_layer=merged is None,
                                               timestamp=self.epoch, comment=COMMENT)]
        return st.layers[:base] + ([merged] if merged else [])

    def base_layer_count(self, stage: Any) -> int:
        if stage.base_stage is not None:
            return self.base_layer_count_of_stage(stage.base_stage)
        if stage.base_image is None:
            return 0
        from builder.scripted import base_layers
        cfg, layers = base_layers(self.ws, self.base_image(stage.base_image))
        self.base_history = len(cfg.history)
        return len(layers)

    def base_layer_count_of_stage(self, index: int) -> int:
        return self.base_layer_count(self.graph.stages[index])


def _confined_context_path(context: Path, rel: str) -> Path:
    ctx = context.resolve()
    p = (ctx / rel.lstrip("/")).resolve()
    if p != ctx and ctx not in p.parents:
        raise BuildError(f"bind mount source {rel}: outside the build context")
    return p


def _digest_sources(sources: list[Any], excluded: Any) -> str:
    """Content digest of everything a COPY/ADD reads (names, modes, bytes), for the cache key."""
    h = hashlib.sha256()
    for s in sources:
        if s.url:
            h.update(b"url:" + s.url.encode())
        paths = [s.path] if not s.is_dir else sorted(p for p in s.path.rglob("*"))
        for p in paths:
            rel = os.path.relpath(p, s.path) if s.is_dir else s.rel
            if s.is_dir and excluded and excluded(os.path.join(s.rel, rel), p.is_dir()):
                continue
            st = os.lstat(p)
            h.update(f"{rel}\0{st.st_mode:o}\0".encode())
            if p.is_symlink():
                h.update(os.readlink(p).encode())
            elif p.is_file():
                with open(p, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
    return h.hexdigest()


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _short(args: list[str]) -> str:
    text = args[-1] if len(args) >= 3 and args[-2] == "-c" else " ".join(args)
    text = text.replace("\n", "; ")
    return text if len(text) < 120 else text[:117] + "..."


def build(ws: "Workspace", opts: BuildOptions) -> BuildResult:
    b = Builder(ws, opts)
    return b.build()
