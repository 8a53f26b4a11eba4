"""Builds for several platforms (``bud --platform linux/amd64,linux/arm64``, ``--arch``,
``--os``, ``--variant``, ``--all-platforms``, ``--manifest NAME``): one build per platform,
each a plain ``builder.build.builder.build`` with that platform, then a manifest list of the
images (builder.image.manifestlist), stored under the names and pushed or exported where
the single-platform build would have written the image.

The list is an OCI image index, or a Docker manifest list when ``--format docker``
(buildah's ``--format`` picks both). A foreign platform's RUN steps need a binfmt_misc
emulator (builder.emulation); stages without RUN build anywhere."""
from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from builder.build.builder import build
from builder.errors import UsageError
from builder.image import manifestlist as ml
from builder.image.imagecopy import closing
from builder.image.imagenames import store_name
from builder.image.oci import DOCKER_LIST, INDEX_TYPES, OCI_INDEX, Platform, parse_config, parse_index, parse_manifest
from builder.image.transports import open_source, parse_location

if TYPE_CHECKING:
    from builder.build.options import BuildOptions
    from builder.progress import Progress
    from builder.workspace.workspace import Workspace

log = logging.getLogger("bale")


@dataclass
class MultiResult:
    """``digest``: the list's index (``sha256:HEX``); ``images``: (platform, image id, manifest
    digest) per platform; ``pushed``: the digest written to each remote destination."""
    digest: str
    images: list[tuple[str, str, str]]
    pushed: dict[str, str]


def platforms_from(platform: str | None, arch: str | None, os_: str | None, variant: str | None) -> list[Platform]:
    """The platforms asked for: ``--platform`` (comma-separated), else ``--os``/``--arch``/
    ``--variant`` over the host's; empty when none of them is given."""
    if platform:
        out = [Platform.parse(p) for p in platform.split(",") if p.strip()]
        if arch or os_ or variant:
            log.info("--arch/--os/--variant ignored: --platform is given")
        return list(dict.fromkeys(out))
    if arch or os_ or variant:
        host = Platform.host()
        return [Platform.parse(f"{os_ or host.os}/{arch or host.architecture}"
                               + (f"/{variant}" if variant else ""))]
    return []


_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", re.I | re.M)


def base_platforms(ws: "Workspace", dockerfile_text: str, registry: object = None) -> list[Platform]:
    """``--all-platforms``: the platforms every base image of the Dockerfile has (the
    platforms of its index; an image that is no index has its config's only). Stage names
    and scratch are skipped; ARG-expanded names are not supported (a usage error)."""
    stages = {m.lower() for m in re.findall(r"^\s*FROM\s+.*?\s+AS\s+(\S+)", dockerfile_text, re.I | re.M)}
    common: list[Platform] | None = None
    for ref in _FROM.findall(dockerfile_text):
        if ref.lower() in stages or ref == "scratch":
            continue
        if "$" in ref:
            raise UsageError(f"--all-platforms: FROM {ref}: a base named by an ARG is not supported")
        loc = parse_location(ref)
        if loc.kind == "store":
            loc = parse_location("docker://" + ref)
        with closing(open_source(loc, store=ws.store, registry=registry)) as src:  # type: ignore[arg-type]
            raw, mt = src.raw_manifest()
            if mt in INDEX_TYPES:
                found = [d.platform for d in parse_index(raw).manifests if d.platform and d.platform.os != "unknown"]
            else:
                import io
                man = parse_manifest(raw)
                buf = io.BytesIO()
                src.write_blob(man.config, buf)
                cfg = parse_config(buf.getvalue())
                found = [Platform(cfg.os, cfg.architecture, cfg.variant)]
        plats = [Platform(p.os, p.architecture, p.variant) for p in found if p is not None]
        common = plats if common is None else [p for p in common if p in plats]
    if not common:
        raise UsageError("--all-platforms: the base images have no platform in common (or there is no base image)")
    return list(dict.fromkeys(common))


def build_platforms(ws: "Workspace", opts: "BuildOptions", platforms: list[Platform], *,
                    manifest: str | None = None, progress: "Progress | None" = None) -> MultiResult:
    """Build ``opts`` once per platform and put the images in one manifest list: added to
    ``manifest`` (made if missing), else stored under the local ``opts.tags``; pushed to
    the transport tags (and the local ones with ``opts.push``); written to oci ``outputs``.
    ``opts.iidfile`` and ``opts.digestfile`` get the list's digest. Raises what build raises
    (the first failing platform ends the build: its error names FILE:LINE)."""
    store = ws.store
    images: list[tuple[str, str, str]] = []
    for plat in platforms:
        if not opts.quiet:
            print(f"[{plat}] building", file=sys.stderr, flush=True)
        one = replace(opts, platform=str(plat), tags=[], push=False, outputs=[], iidfile=None, digestfile=None)
        res = build(ws, one, progress)
        images.append((str(plat), res.image_id, res.manifest_digest))
    list_mt = DOCKER_LIST if opts.image_format == "docker" else OCI_INDEX
    local, remote = [], []
    for t in opts.tags:
        if t.startswith(("docker://", "oci:", "oci-archive:", "docker-archive:", "docker-daemon:")):
            remote.append(t)
        else:
            local.append(store_name(t))
            if opts.push:
                remote.append("docker://" + t)
    names = ([store_name(manifest)] if manifest else []) + local
    if not names:
        names = [f"localhost/bale-manifest-{images[-1][1].split(':')[-1][:12]}:latest"]
    lst = None
    for name in names:
        existing = ml.find_list(store, name) if name == names[0] and manifest else None
        index = ml.read_index(store, existing) if existing else ml.new_index(list_mt)
        for _plat, _iid, mdigest in images:
            ml.add_instance(store, index, mdigest, replace_platform=True)
        lst = ml.save(store, name, index)
    assert lst is not None
    pushed: dict[str, str] = {}
    for dest in remote:
        if dest.startswith(("oci-archive:", "docker-archive:", "docker-daemon:")):
            raise UsageError(f"{dest}: a multi-platform build writes a manifest list, which only docker:// and "
                             "oci: hold")
        pushed[dest] = ml.push_list(ws, lst, dest, registry=opts.registry)
    for out in opts.outputs:
        if out.type == "oci":
            ref = local[0].rsplit(":", 1)[1] if local else None
            pushed[f"oci:{out.dest}"] = ml.push_list(ws, lst, f"oci:{out.dest}" + (f":{ref}" if ref else ""))
        elif out.type == "registry":
            pushed["docker://" + out.dest] = ml.push_list(ws, lst, "docker://" + out.dest, registry=opts.registry)
        else:
            raise UsageError(f"--output type={out.type}: a multi-platform build writes a manifest list (use "
                             "type=oci or type=registry, or one --platform)")
    for path, value in ((opts.iidfile, lst.digest), (opts.digestfile, next(iter(pushed.values()), lst.digest))):
        if path:
            Path(path).write_text(value)
    return MultiResult(lst.digest, images, pushed)
