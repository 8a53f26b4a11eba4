"""An independent reader of OCI layouts written by bale (stdlib only): the
manifest, the config, and the filesystem the layers add up to."""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Entry:
    info: tarfile.TarInfo
    content: bytes


def read_layout(path: Path, ref: str = "latest") -> tuple[dict, dict, list[bytes]]:
    index = json.loads((path / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref)
    blob = lambda d: (path / "blobs" / "sha256" / d.split(":")[1]).read_bytes()  # noqa: E731
    manifest = json.loads(blob(desc["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    layers = []
    for l in manifest["layers"]:
        raw = blob(l["digest"])
        if raw[:4] == b"\x28\xb5\x2f\xfd":  # zstd: the test suite's own dependency decodes it
            import zstandard
            raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True).read()
        layers.append(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    return manifest, config, layers


def flatten(layers: list[bytes]) -> dict[str, Entry]:
    """Apply the layers in order: whiteouts delete, opaque markers hide lower content."""
    fs: dict[str, Entry] = {}
    for data in layers:
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            members = t.getmembers()
            this_layer = {"/" + m.name.strip("/").removeprefix("./") for m in members}
            for m in members:
                name = "/" + m.name.strip("/").removeprefix("./")
                parent, base = name.rsplit("/", 1)
                if base == ".wh..wh..opq":
                    for p in [p for p in fs if p.startswith(parent + "/") and p not in this_layer]:
                        del fs[p]
                    continue
                if base.startswith(".wh."):
                    victim = f"{parent}/{base[4:]}"
                    for p in [p for p in fs if p == victim or p.startswith(victim + "/")]:
                        del fs[p]
                    continue
                content = t.extractfile(m).read() if m.isreg() else b""
                if m.islnk():
                    target = fs.get("/" + m.linkname.strip("/"))
                    content = target.content if target else b""
                fs[name] = Entry(m, content)
    return fs
