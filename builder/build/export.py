"""``--output type=tar`` and ``type=local``: an image's filesystem, flattened,
with owners, modes, xattrs and device numbers exactly as its layers hold them.

type=tar is written straight from the layer blobs: a flattened tar of the
layer stack (whiteouts and opaque directories honoured, as overlayfs and
containerd's applier read them), so no file is ever created on disk and no id
mapping is involved: every header (uid/gid, uname/gname, mode with setuid bits,
``SCHILY.xattr.*`` records, device major/minor, mtime) is the layer's own. The
tar is streamed into a temporary file next to the destination and renamed, so
a failed export leaves no partial file.

type=local applies the layers into the destination directory inside bale's
user namespace (Runtime.call), where the image's ids exist: a file the image
gives to 1234:4321 is chowned to 1234:4321 there, which rootless is the
subordinate id the user's /etc/subuid range maps it to on disk (buildah's
rootless ``--output type=local`` does the same; ``bale unshare`` sees them as
in the image). A chown that fails is an ExportError, never skipped; device
nodes, which a user namespace may not create, are reported in one warning.

Follows BuildKit's local and tar exporters (exporter/local: the filesystem
of the result, not an image layout), whose tar is tonistiigi/fsutil's
tarwriter.go WriteTar: names relative without ``./`` (directories with a
trailing slash), the root not included, uid/gid, device numbers and link
names from each file's stat, xattrs as ``SCHILY.xattr.*`` PAX records.
"""
from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Callable, Iterator

from builder.errors import BaleError
from builder.image.commit import image_layers
from builder.workspace.runtime import StoreBlobOpener
from snapshotter.apply import apply_tar
from snapshotter.errors import SnapshotError

if TYPE_CHECKING:
    from builder.image.store import ImageRecord, Store
    from builder.workspace.runtime import Runtime

log = logging.getLogger("bale")

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
#: xattrs of overlay bookkeeping, never part of an image's content (snapshotter.apply drops them too)
DROPPED_XATTR_PREFIXES = ("SCHILY.xattr.user.overlay.", "SCHILY.xattr.trusted.overlay.",
                          "SCHILY.xattr.user.fuseoverlayfs.")
#: PAX records tarfile regenerates from TarInfo fields; any other record (xattrs, ...) is copied
_REGENERATED = frozenset({"path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime", "atime", "ctime"})

LayerOpener = Callable[[], BinaryIO]


class ExportError(BaleError):
    """An output could not be written as the image has it (exit 1)."""


# --- flattening ---------------------------------------------------------------
@dataclass(eq=False)
class _Version:
    """One tar entry of one layer: the version of a path that layer holds."""
    layer: int
    index: int
    isdir: bool


def _norm(name: str) -> str:
    """A tar name as a relative path without ``./``, ``..`` or trailing slash; "" is the root."""
    return posixpath.normpath("/" + name).lstrip("/")


class _Tree:
    """Which version of each path survives the layer stack, with a child index for subtree removal."""

    def __init__(self) -> None:
        self.final: dict[str, _Version] = {}
        self.kids: dict[str, set[str]] = {}

    def put(self, path: str, v: _Version) -> None:
        prev = self.final.get(path)
        if prev is not None and prev.isdir and not v.isdir:
            self.drop_below(path, v.layer + 1)  # a directory replaced by a file takes its subtree along
        self.final[path] = v
        self.kids.setdefault(posixpath.dirname(path), set()).add(posixpath.basename(path))

    def drop(self, path: str, below_layer: int) -> None:
        """Remove ``path`` and its subtree as far as lower layers made them (a whiteout)."""
        for name in list(self.kids.get(path, ())):
            self.drop(posixpath.join(path, name) if path else name, below_layer)
        v = self.final.get(path)
        if v is not None and v.layer < below_layer:
            del self.final[path]
            self.kids.get(posixpath.dirname(path), set()).discard(posixpath.basename(path))

    def drop_below(self, path: str, below_layer: int) -> None:
        """Remove what lower layers put under directory ``path`` (an opaque directory), however
        deep, whatever this layer re-made in between."""
        for name in list(self.kids.get(path, ())):
            self.drop(posixpath.join(path, name) if path else name, below_layer)


def _plan(openers: list[LayerOpener]) -> tuple[dict[tuple[int, int], str], dict[tuple[int, int], list[str]]]:
    """Pass 1 over the headers: (layer, index) -> output path of every surviving entry, and the
    versions that hard links surviving the stack still need although a later layer replaced them
    (such a link becomes a copy of the version it was made against)."""
    tree = _Tree()
    links: list[tuple[str, _Version, str, _Version | None]] = []
    for i, opener in enumerate(openers):
        for j, m in _members(opener):
            path = _norm(m.name)
            if not path:
                continue
            parent, base = posixpath.split(path)
            if base == OPAQUE:
                tree.drop_below(parent, i)
                continue
            if base.startswith(WHITEOUT_PREFIX):
                name = base[len(WHITEOUT_PREFIX):]
                if name and name not in (".", "..") and not name.startswith(WHITEOUT_PREFIX):
                    tree.drop(posixpath.join(parent, name), i)
                continue
            v = _Version(i, j, m.isdir())
            tree.put(path, v)
            if m.islnk():
                target = _norm(m.linkname)
                links.append((path, v, target, tree.final.get(target)))
    stale: dict[tuple[int, int], list[str]] = {}
    for path, v, target, tv in links:
        if tree.final.get(path) is v and tv is not None and tree.final.get(target) is not tv:
            stale.setdefault((tv.layer, tv.index), []).append(path)
    keep = {(v.layer, v.index): p for p, v in tree.final.items()}
    return keep, stale


def _members(opener: LayerOpener) -> Iterator[tuple[int, tarfile.TarInfo]]:
    with opener() as src:
        try:
            with tarfile.open(fileobj=src, mode="r|") as tf:
                for j, m in enumerate(tf):
                    yield j, m
        except tarfile.TarError as exc:
            raise ExportError(f"corrupt layer tar: {exc}") from None


def _header(m: tarfile.TarInfo, name: str, *, linkname: str | None = None, as_file: bool = False) -> tarfile.TarInfo:
    out = tarfile.TarInfo(name)
    out.mode, out.uid, out.gid, out.mtime = m.mode, m.uid, m.gid, m.mtime
    out.uname, out.gname = m.uname, m.gname
    out.devmajor, out.devminor = m.devmajor, m.devminor
    out.type = tarfile.REGTYPE if as_file else m.type
    out.size = m.size if out.type in tarfile.REGULAR_TYPES else 0
    out.linkname = linkname if linkname is not None else m.linkname
    out.pax_headers = {k: v for k, v in m.pax_headers.items()
                       if k not in _REGENERATED and not k.startswith(DROPPED_XATTR_PREFIXES)}
    return out


def write_flat_tar(openers: list[LayerOpener], out: IO[bytes]) -> int:
    """Write the filesystem of the layer stack ``openers`` (bottom first; each opens an
    uncompressed layer tar) to ``out`` as one PAX tar; returns the number of entries.

    Entries come in layer order, each path once, as its topmost layer has it; whiteouts
    and opaque directories remove what lower layers made (OCI image-spec layer.md,
    "Whiteouts"). Headers are copied, not recomputed: owners, modes, xattrs and device
    numbers are the layers' own. Raises ExportError for a corrupt layer."""
    keep, stale = _plan(openers)
    stale_paths = {p for paths in stale.values() for p in paths}
    n = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tw:
        for i, opener in enumerate(openers):
            with opener() as src, tarfile.open(fileobj=src, mode="r|") as tf:
                for j, m in enumerate(tf):
                    key = (i, j)
                    path = keep.get(key)
                    copies = stale.get(key)
                    if path is None and copies is None:
                        continue
                    if copies:
                        n += _emit_copies(tw, tf, m, copies, path)
                        continue
                    assert path is not None
                    if path in stale_paths:
                        continue  # written as a copy of the version it links to
                    if m.islnk():
                        hdr = _header(m, path, linkname=_norm(m.linkname))
                    else:
                        hdr = _header(m, path)
                    tw.addfile(hdr, tf.extractfile(m) if hdr.isreg() else None)
                    n += 1
    return n


def _emit_copies(tw: tarfile.TarFile, tf: tarfile.TarFile, m: tarfile.TarInfo, copies: list[str],
                 path: str | None) -> int:
    """A version that later layers replaced but hard links still refer to: the first link becomes
    a file with its content, the others links to that file; ``path`` when it survives too."""
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
        data = tf.extractfile(m) if m.isreg() else None
        if data is not None:
            shutil.copyfileobj(data, spool, 1 << 20)
        first = copies[0]
        spool.seek(0)
        tw.addfile(_header(m, first, as_file=m.isreg()), spool if m.isreg() else None)
        for other in copies[1:]:
            link = _header(m, other, linkname=first)
            link.type, link.size = tarfile.LNKTYPE, 0
            tw.addfile(link)
        if path is not None:
            spool.seek(0)
            tw.addfile(_header(m, path), spool if m.isreg() else None)
    return len(copies) + (path is not None)


# --- exporters ----------------------------------------------------------------
def layer_openers(store: "Store", rec: "ImageRecord") -> list[LayerOpener]:
    """Openers of ``rec``'s layers, bottom first, each an uncompressed, digest-verified stream."""
    _, layers = image_layers(store, rec)
    return [StoreBlobOpener(str(store.root), l.descriptor.digest, l.descriptor.media_type) for l in layers]


def export_tar(store: "Store", rec: "ImageRecord", dest: str | Path) -> int:
    """``--output type=tar,dest=FILE``: the flattened filesystem of ``rec`` as a tar file at
    ``dest`` (replaced atomically); returns its number of entries. Raises ExportError."""
    dest = Path(dest)
    openers = layer_openers(store, rec)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".bale-export-", dir=dest.absolute().parent)
    except OSError as exc:
        raise ExportError(f"--output type=tar,dest={dest}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            n = write_flat_tar(openers, out)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ExportError(f"--output type=tar,dest={dest}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_layers_into(dest: str, openers: list[LayerOpener]) -> list[str]:
    """In the namespace: apply each layer over ``dest`` with the image's owners (a failed chown
    raises BaleError, which export_local turns into ExportError); returns warnings (device
    nodes a user namespace may not create)."""
    warnings: list[str] = []
    for opener in openers:
        with opener() as src:
            try:
                result = apply_tar(src, Path(dest), whiteout_format="native", ignore_chown_errors=False)
            except SnapshotError as exc:  # a plain BaleError crosses the namespace boundary (sandbox/wire.py)
                raise BaleError(f"--output type=local,dest={dest}: {exc}") from None
            except OSError as exc:
                raise BaleError(f"--output type=local,dest={dest}: {exc.filename or ''}: {exc.strerror}") \
                    from None
        warnings.extend(result.warnings)
    return warnings


def export_local(rt: "Runtime", store: "Store", rec: "ImageRecord", dest: str | Path) -> None:
    """``--output type=local,dest=DIR``: ``rec``'s filesystem applied into DIR (made if absent)
    inside the user namespace, so owners are the image's (subordinate ids on disk when
    rootless). Raises ExportError when an owner, mode or file cannot be set."""
    path = Path(dest).absolute()
    path.mkdir(parents=True, exist_ok=True)
    try:
        warnings = rt.call(apply_layers_into, str(path), layer_openers(store, rec))
    except BaleError as exc:
        if type(exc) is not BaleError:
            raise
        raise ExportError(str(exc)) from None
    for w in warnings:
        log.warning("--output type=local: %s", w)


def export_filesystem(rt: "Runtime", store: "Store", rec: "ImageRecord", out: Any) -> None:
    """Dispatch an ``OutputSpec`` of type ``tar`` or ``local``."""
    if out.type == "tar":
        export_tar(store, rec, out.dest)
    elif out.type == "local":
        export_local(rt, store, rec, out.dest)
    else:
        raise ValueError(out.type)
