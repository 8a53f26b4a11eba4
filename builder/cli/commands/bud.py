"""`bale bud` / `bale build`: build an image from a Dockerfile, with buildah's flags."""
from __future__ import annotations

import os
from typing import Any, Callable

import click

from builder.cli.options import signing_options, output_options, platform_option, progress_options, registry_options, \
    registry_options_from


def _pull_policy(value: str | None) -> str:
    if value is None:
        return "missing"
    v = value.lower()
    return {"true": "always", "false": "missing", "": "always", "ifmissing": "missing",
            "ifnewer": "newer"}.get(v, v)


#: buildah bud flags bale accepts without honouring, and the one line it logs for each
#: (level: warning where the image or the RUN environment could differ from buildah's)
NOT_HONOURED: dict[str, tuple[str, str]] = {
    "cap_add": ("warning", "--cap-add: ignored (RUN keeps bale's fixed capability set)"),
    "cap_drop": ("warning", "--cap-drop: ignored (RUN keeps bale's fixed capability set)"),
    "security_opt": ("warning", "--security-opt: ignored (bale applies its own seccomp and no LSM labels)"),
    "ssh": ("warning", "--ssh: ignored (bale cannot forward an SSH agent; RUN --mount=type=ssh gets no socket)"),
    "sign_by": ("warning", "--sign-by: ignored (no GPG signing; use --sign-by-sigstore-private-key)"),
    "from_image": ("warning", "--from: ignored (bale builds the FROM the Dockerfile names)"),
    "cache_ttl": ("warning", "--cache-ttl: ignored (cached layers do not expire)"),
    "decryption_key": ("warning", "--decryption-key: ignored (bale cannot decrypt layers)"),
    "device": ("warning", "--device: ignored (RUN gets bale's fixed /dev)"),
    "hooks_dir": ("warning", "--hooks-dir: ignored (bale runs no OCI hooks)"),
    "runtime_flag": ("warning", "--runtime-flag: ignored"),
    "os_feature": ("warning", "--os-feature: ignored (not written to the image)"),
    "os_version": ("warning", "--os-version: ignored (not written to the image)"),
    "identity_label": ("info", "--identity-label: ignored (bale writes no io.buildah.version label)"),
    "omit_history": ("warning", "--omit-history: ignored (the image keeps its history)"),
    "cpp_flag": ("warning", "--cpp-flag: ignored (Containerfile.in is not preprocessed)"),
    "no_hosts": ("warning", "--no-hosts: ignored (RUN gets a generated /etc/hosts)"),
    "dns": ("warning", "--dns: ignored (RUN uses the host's resolv.conf)"),
    "dns_option": ("warning", "--dns-option: ignored (RUN uses the host's resolv.conf)"),
    "dns_search": ("warning", "--dns-search: ignored (RUN uses the host's resolv.conf)"),
    "stdin": ("info", "--stdin: ignored (RUN reads /dev/null)"),
    "userns": ("info", "--userns: ignored (bale picks the user namespace; see bale info)"),
    "userns_uid_map": ("info", "--userns-uid-map: ignored (bale maps ids from /etc/subuid)"),
    "userns_gid_map": ("info", "--userns-gid-map: ignored (bale maps ids from /etc/subgid)"),
    "userns_uid_map_user": ("info", "--userns-uid-map-user: ignored"),
    "userns_gid_map_group": ("info", "--userns-gid-map-group: ignored"),
    "ipc": ("info", "--ipc: ignored (RUN gets a private IPC namespace)"),
    "pid": ("info", "--pid: ignored (RUN gets a private PID namespace)"),
    "uts": ("info", "--uts: ignored (RUN gets a private UTS namespace)"),
    "cgroupns": ("info", "--cgroupns: ignored"),
    "cgroup_parent": ("info", "--cgroup-parent: ignored (bale sets no cgroup limits)"),
    "cpu_period": ("info", "--cpu-period: ignored (bale sets no cgroup limits)"),
    "cpu_quota": ("info", "--cpu-quota: ignored (bale sets no cgroup limits)"),
    "cpu_shares": ("info", "--cpu-shares: ignored (bale sets no cgroup limits)"),
    "cpuset_cpus": ("info", "--cpuset-cpus: ignored (bale sets no cgroup limits)"),
    "cpuset_mems": ("info", "--cpuset-mems: ignored (bale sets no cgroup limits)"),
    "memory": ("info", "--memory: ignored (bale sets no cgroup limits)"),
    "memory_swap": ("info", "--memory-swap: ignored (bale sets no cgroup limits)"),
    "shm_size": ("info", "--shm-size: ignored (RUN's /dev/shm is a default tmpfs)"),
    "ulimit": ("info", "--ulimit: ignored (RUN inherits bale's limits)"),
    "logsplit": ("info", "--logsplit: ignored (one --logfile)"),
    "compress": ("debug", "--compress: ignored (no daemon: nothing to compress the context for)"),
    "disable_content_trust": ("debug", "--disable-content-trust: nothing to disable"),
    "http_proxy": ("debug", "--http-proxy: proxy variables are passed to RUN as BuildKit's predefined ARGs"),
    "skip_unused_stages": ("debug", "--skip-unused-stages: bale always builds only the stages the target needs"),
}


def _ignored_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The buildah flags of NOT_HONOURED (accepted, each logs its one line when given)."""
    multi = {"cap_add", "cap_drop", "security_opt", "ssh", "decryption_key", "device",
             "hooks_dir", "runtime_flag", "os_feature", "cpp_flag", "dns_option", "dns_search", "ulimit",
             "userns_uid_map", "userns_gid_map"}
    flags = {"no_hosts", "stdin", "compress", "disable_content_trust", "omit_history", "skip_unused_stages",
             "logsplit"}
    true_flags = {"identity_label", "http_proxy"}
    for dest in sorted(NOT_HONOURED, reverse=True):
        name = "--" + ("from" if dest == "from_image" else dest.replace("_", "-"))
        names = [name] + (["-c"] if dest == "cpu_shares" else []) + (["-m"] if dest == "memory" else [])
        help_text = NOT_HONOURED[dest][1].split(": ", 1)[1]
        if dest in flags:
            f = click.option(*names, dest, is_flag=True, default=False, help=help_text)(f)
        elif dest in true_flags:
            f = click.option(f"{name}/--no-{name[2:]}", dest, default=True, help=help_text)(f)
        else:
            f = click.option(*names, dest, multiple=dest in multi, default=None, help=help_text)(f)
    return f


def _report_ignored(kw: dict[str, Any]) -> None:
    import logging
    log = logging.getLogger("bale")
    for dest, (level, line) in NOT_HONOURED.items():
        value = kw.pop(dest, None)
        if dest in ("identity_label", "http_proxy"):
            value = None  # default true in buildah; bale adds neither the label nor the host's proxies
        if value:
            getattr(log, level)("%s", line)


def _layers_default() -> bool:
    return os.environ.get("BUILDAH_LAYERS", "").lower() in ("1", "t", "true")


@click.command("bud")
@click.option("--file", "-f", "dockerfile", default=None, metavar="PATH",
              help="Dockerfile (default CONTEXT/Dockerfile or Containerfile; - for stdin).")
@click.option("--tag", "-t", "tags", multiple=True, help="Name for the image (repeatable; a transport pushes).")
@click.option("--manifest", default=None, metavar="NAME",
              help="Add the image(s) to this manifest list (made if missing).")
@click.option("--build-arg", "build_args", multiple=True, metavar="K[=V]")
@click.option("--build-arg-file", "build_arg_files", multiple=True, metavar="FILE")
@click.option("--ignorefile", default=None, metavar="FILE",
              help="Ignore file to use instead of CONTEXT/.containerignore or .dockerignore.")
@click.option("--target", default=None, help="Build this stage (default: the last).")
@click.option("--layers/--no-layers", default=_layers_default, help="Cache intermediate layers (env BUILDAH_LAYERS).")
@click.option("--no-cache", is_flag=True, help="Do not use cached layers.")
@click.option("--cache-from", "cache_from", multiple=True, metavar="REPO",
              help="Look cached steps up in this registry repository (with --layers; repeatable).")
@click.option("--cache-to", "cache_to", multiple=True, metavar="REPO",
              help="Push each cached step to this registry repository (with --layers).")
@click.option("--pull", "pull", default=None, metavar="POLICY", is_flag=False, flag_value="always",
              help="always|missing|never|newer (bare --pull = always).")
@click.option("--pull-always", is_flag=True, hidden=True)
@click.option("--pull-never", is_flag=True, hidden=True)
@click.option("--squash", is_flag=True, help="Squash all new layers into one.")
@click.option("--timestamp", type=click.IntRange(-62135596800, 253402300799), default=None, help="Created time and file mtimes (reproducible builds).")
@click.option("--source-date-epoch", type=click.IntRange(0, 253402300799), default=None,
              help="As --timestamp (unless given), and the SOURCE_DATE_EPOCH build arg.")
@click.option("--label", "labels", multiple=True, metavar="K=V")
@click.option("--annotation", "annotations", multiple=True, metavar="K=V")
@click.option("--env", "env", multiple=True, metavar="K[=V]", help="Set a variable in the image's Env.")
@click.option("--unsetenv", multiple=True, metavar="K", help="Remove a variable from the image's Env.")
@click.option("--iidfile", default=None, help="Write the image id (a list's digest) here.")
@click.option("--digestfile", default=None, help="Write the manifest digest here.")
@click.option("--metadata-file", default=None, help="Write build metadata JSON here (docker buildx's keys).")
@click.option("--logfile", default=None, help="Write all output to this file instead of stdout and stderr.")
@click.option("--output", "-o", "outputs", multiple=True, metavar="type=TYPE,dest=PATH",
              help="oci, oci-archive, docker-archive, local or tar output (repeatable).")
@click.option("--push", is_flag=True, help="Push to the -t names instead of (only) storing.")
@click.option("--secret", "secrets", multiple=True, metavar="id=ID,src=FILE|env=VAR")
@click.option("--build-context", "build_contexts", multiple=True, metavar="NAME=DIR|docker-image://REF")
@click.option("--volume", "-v", "volumes", multiple=True, metavar="SRC:DST[:ro]", help="Bind mount into every RUN.")
@click.option("--add-host", "add_hosts", multiple=True, metavar="HOST:IP", help="Add a line to RUN's /etc/hosts.")
@click.option("--network", "--net", "network", default="host", show_default=True,
              help="host, none, or default/private (= host; bale has no network namespace of its own).")
@click.option("--isolation", type=click.Choice(["rootless", "chroot", "oci", "ptrace"]), default=None,
              envvar="BUILDAH_ISOLATION")
@click.option("--runtime", default=None, envvar="BALE_RUNTIME", help="OCI runtime for --isolation oci.")
@click.option("--rm/--no-rm", "remove_intermediate", default=True, help="Remove intermediate containers.")
@click.option("--force-rm", is_flag=True, hidden=True)
@click.option("--jobs", type=int, default=2, show_default=True, help="Stages built in parallel.")
@click.option("--disable-compression", "-D", is_flag=True)
@click.option("--arch", default=None, help="Architecture to build for (with the host's OS).")
@click.option("--os", "os_", default=None, help="OS to build for.")
@click.option("--variant", default=None, help="Architecture variant to build for.")
@click.option("--all-platforms", is_flag=True, help="Build for every platform all base images have.")
@_ignored_options
@output_options(short_format=False)
@progress_options
@platform_option
@registry_options
@signing_options
@click.argument("context", required=False, default=".")
@click.pass_context
def bud(ctx: click.Context, /, context: str, **kw: Any) -> None:
    """Build an image from a Dockerfile in CONTEXT (a directory, a tarball, - or a git URL)."""
    if kw["logfile"]:
        _redirect_output(kw["logfile"])
    _report_ignored(kw)
    from builder.build import options as bo
    from builder.cli.context import workspace
    from builder.errors import UsageError
    from builder.scripted import parse_volume
    regopts = registry_options_from(kw)
    pull = _pull_policy(kw["pull"])
    if kw["pull_always"]:
        pull = "always"
    if kw["pull_never"]:
        pull = "never"
    network = {"default": "host", "private": "host", "bridge": "host"}.get(kw["network"], kw["network"])
    if network not in ("host", "none"):
        raise UsageError(f"invalid --network {kw['network']!r}: bale runs RUN with host or none")
    compression = "none" if kw["disable_compression"] else (kw["compression"] or "gzip")
    for v in kw["volumes"]:
        parse_volume(v)  # a bad -v fails before the build starts
    for h in kw["add_hosts"]:
        if ":" not in h:
            raise UsageError(f"invalid --add-host {h!r}: expected HOST:IP")
    build_args = bo.parse_build_args(kw["build_args"], kw["build_arg_files"])
    timestamp = kw["timestamp"]
    if kw["source_date_epoch"] is not None:
        build_args.setdefault("SOURCE_DATE_EPOCH", str(kw["source_date_epoch"]))
        if timestamp is None:
            timestamp = kw["source_date_epoch"]
    env = {}
    for item in kw["env"]:
        k, sep, v = item.partition("=")
        if not k:
            raise UsageError(f"invalid --env {item!r}: expected KEY=VALUE")
        if sep or k in os.environ:
            env[k] = v if sep else os.environ[k]
    import logging
    if (kw["cache_from"] or kw["cache_to"]) and not kw["layers"]:
        logging.getLogger("bale").warning("--cache-from/--cache-to: ignored without --layers (as buildah)")
    if len(kw["cache_to"]) > 1:
        raise UsageError("--cache-to: name one repository")
    tags = list(kw["tags"])
    outputs = [bo.parse_output(o) for o in kw["outputs"]]
    opts = bo.BuildOptions(
        context=context, dockerfile=kw["dockerfile"], tags=tags,
        build_args=build_args, target=kw["target"],
        layers=kw["layers"], no_cache=kw["no_cache"], pull=pull, squash=kw["squash"],
        timestamp=timestamp, image_format=kw["image_format"] or "oci", compression=compression,
        compression_level=kw["compression_level"], labels=bo.parse_kv_list(kw["labels"], "--label"),
        annotations=bo.parse_kv_list(kw["annotations"], "--annotation"), iidfile=kw["iidfile"],
        digestfile=kw["digestfile"], outputs=outputs, push=kw["push"],
        secrets={s.id: s for s in map(bo.parse_secret, kw["secrets"])},
        build_contexts=bo.parse_build_contexts(kw["build_contexts"]), platform=kw["platform"],
        network=network, quiet=kw["quiet"],
        progress=kw["progress"], registry=regopts, isolation=kw["isolation"],
        remove_intermediate=kw["remove_intermediate"] or kw["force_rm"], jobs=max(1, kw["jobs"]),
        ignorefile=kw["ignorefile"], volumes=tuple(kw["volumes"]), add_hosts=tuple(kw["add_hosts"]),
        env=env, unsetenv=tuple(kw["unsetenv"]), cache_from=tuple(kw["cache_from"]),
        cache_to=kw["cache_to"][0] if kw["cache_to"] else None)
    ws = workspace(ctx, oci_runtime=kw["runtime"])
    _build(ws, opts, kw)


def _build(ws: Any, opts: Any, kw: dict[str, Any]) -> None:
    """One build, or one per platform and a manifest list (builder.multiplatform); RUN cache
    mounts imported before and exported after when the remote cache says ``mounts=true``."""
    from builder import multiplatform as mp
    from builder.cli.progress import make_progress
    progress = make_progress(opts.quiet, opts.progress)
    plats = mp.platforms_from(kw["platform"], kw["arch"], kw["os_"], kw["variant"])
    if kw["all_platforms"]:
        from builder.build.context import open_context
        c = open_context(opts.context, opts.dockerfile, ws.store.tmp_dir)
        try:
            plats = mp.base_platforms(ws, c.dockerfile_text or "", opts.registry)
        finally:
            c.cleanup()
    remote = _mount_cache(ws, opts)
    if remote is not None and remote.mounts_from:
        from builder.image.mountcache import import_mounts
        import_mounts(remote, ws.runtime(opts.isolation), ws.root)
    _build_all(ws, opts, kw, plats, progress)
    if remote is not None and remote.mounts_to:
        from builder.image.mountcache import export_mounts
        export_mounts(remote, ws.runtime(opts.isolation), ws.root)


def _mount_cache(ws: Any, opts: Any) -> Any:
    """The RemoteCache when RUN cache mounts go through it (``,mounts=true``), else None."""
    if not opts.layers or not (opts.cache_from or opts.cache_to):
        return None
    from builder.image.remotecache import RemoteCache
    rc = RemoteCache.from_flags(ws.store, list(opts.cache_from), opts.cache_to, opts.registry, "linux/amd64")
    return rc if rc is not None and (rc.mounts_from or rc.mounts_to) else None


def _build_all(ws: Any, opts: Any, kw: dict[str, Any], plats: list[Any], progress: Any) -> None:
    from dataclasses import replace
    from builder import multiplatform as mp
    from builder.build.builder import build
    if len(plats) > 1 or kw["manifest"]:
        res = mp.build_platforms(ws, opts, plats or [__import__("builder.image.oci", fromlist=["Platform"])
                                                     .Platform.host()], manifest=kw["manifest"],
                                 progress=progress)
        _metadata(kw["metadata_file"], res.digest, res.digest, opts.tags)
        click.echo(res.digest.split(":", 1)[1])
        return
    if plats:
        opts = replace(opts, platform=str(plats[0]))
    result = build(ws, opts, progress)
    _metadata(kw["metadata_file"], result.manifest_digest, result.image_id, opts.tags)
    click.echo(result.image_id.split(":", 1)[1] if result.image_id else "")


def _metadata(path: str | None, digest: str, image_id: str, tags: list[str]) -> None:
    """--metadata-file: docker buildx's keys (containerimage.digest, containerimage.config.digest,
    image.name)."""
    if not path:
        return
    import json
    with open(path, "w") as fh:
        json.dump({"containerimage.digest": digest, "containerimage.config.digest": image_id,
                   "image.name": ",".join(tags)}, fh, indent=2)


def _redirect_output(path: str) -> None:
    """--logfile: stdout and stderr (of bale and of RUN) go to ``path`` from here on."""
    import sys
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
