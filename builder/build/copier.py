"""COPY/ADD sources on the host side: resolve them inside a context directory,
then stream them as one tar whose member names are relative to the
destination directory. The tar is applied in the container by the
snapshotter's confined ``apply_tar`` (buildah's copier.Get / copier.Put cut).

Rules (Docker's): a directory source copies its contents; a single file goes
to DEST if DEST is not an existing directory and does not end in ``/``; with
several sources DEST is a directory. ADD extracts local tar archives (plain,
gzip, bzip2, xz) and fetches URLs (mode 0600, optional ``--checksum``).
"""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import posixpath
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

from builder.errors import BuildError, UsageError

#: (relative path, is_dir) -> excluded?
Excluder = Callable[[str, bool], bool]


@dataclass
class Source:
    """One resolved source: a path on the host and the name it gets under the destination."""

    path: Path
    rel: str  # path relative to the context, for exclusion matching and messages
    is_dir: bool
    archive: bool = False  # ADD: extract
    url: str | None = None
    mode: int | None = None  # forced mode (ADD URL: 0600)
    mtime: float | None = None


@dataclass
class CopyPlan:
    """Where the tar goes (``dest_dir``) and what it holds."""

    dest_dir: str
    sources: list[Source]
    #: the name a single file source takes in dest_dir ("" keeps its basename)
    rename: str = ""
    chmod: int | None = None
    excluded: Excluder | None = None
    #: COPY --exclude patterns, matched against paths relative to each directory source
    source_excluded: Excluder | None = None
    temp_files: list[Path] = field(default_factory=list)

    def cleanup(self) -> None:
        for p in self.temp_files:
            p.unlink(missing_ok=True)


def parse_chmod(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        mode = int(text, 8)
    except ValueError:
        raise UsageError(f"invalid --chmod {text!r}: expected an octal mode such as 0755") from None
    if mode > 0o7777:
        raise UsageError(f"invalid --chmod {text!r}: out of range")
    return mode


def _confined(context: Path, rel: str) -> Path:
    """The host path for ``rel``, with symlinks resolved but never leaving ``context``."""
    ctx = context.resolve()
    cand = (ctx / rel.lstrip("/")).resolve()
    if cand != ctx and ctx not in cand.parents:
        raise BuildError(f"copy source {rel}: outside the context directory {context}")
    return cand


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _is_archive(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(262)
    except OSError:
        return False
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def resolve_sources(context: Path, patterns: list[str], *, add: bool = False,
                    excluded: Excluder | None = None) -> list[Source]:
    """Expand wildcards inside ``context``; every pattern must match something."""
    out: list[Source] = []
    ctx = context.resolve()
    for pat in patterns:
        if add and is_url(pat):
            out.append(Source(Path(), pat, False, url=pat))
            continue
        rel = posixpath.normpath("/" + pat).lstrip("/") or "."
        if _has_magic(rel):
            hits = sorted(glob.glob(glob.escape(str(ctx)) + "/" + rel))
            rels = [os.path.relpath(h, ctx) for h in hits]
            rels = [r for r in rels if not _hidden(excluded, ctx, r)]
        else:
            rels = [rel] if os.path.lexists(ctx / rel) and not _hidden(excluded, ctx, rel) else []
        if not rels:
            raise BuildError(f"copy source {pat!r}: no such file or directory in context {context}")
        for r in rels:
            host = _confined(ctx, r)
            if not host.exists():
                raise BuildError(f"copy source {pat!r}: no such file or directory in context {context}")
            if stat.S_ISSOCK(os.lstat(host).st_mode):
                raise BuildError(f"copy source {pat!r}: {r} is a socket: only files, directories and "
                                 "symbolic links can be copied")
            is_dir = host.is_dir()
            out.append(Source(host, r, is_dir, archive=add and not is_dir and _is_archive(host)))
    return out


def plan_copy(sources: list[Source], dest: str, dest_kind: str | None, *, chmod: int | None = None,
              excluded: Excluder | None = None) -> CopyPlan:
    """Decide the destination directory and naming. ``dest`` is absolute; ``dest_kind`` is what
    exists there in the container ("dir", "file" or None)."""
    as_dir = dest.endswith("/") or dest_kind == "dir" or len(sources) > 1
    single = sources[0] if len(sources) == 1 else None
    if single is not None and (single.is_dir or single.archive):
        as_dir = True
    dest = posixpath.normpath(dest) if dest not in ("/", "") else "/"
    if as_dir:
        return CopyPlan(dest, sources, "", chmod, excluded)
    return CopyPlan(posixpath.dirname(dest) or "/", sources, posixpath.basename(dest), chmod, excluded)


def fetch_url(src: Source, tmp_dir: Path, checksum: str | None) -> None:
    """Download ``src.url`` to a temp file (streamed), verify ``checksum``; fills in path/mode/mtime."""
    import email.utils
    import urllib.parse
    import urllib.request
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="add-url-")
    algo, _, want = (checksum or "sha256:").partition(":")
    if algo not in ("sha256", "sha384", "sha512"):
        raise UsageError(f"ADD {src.url}: unsupported checksum algorithm {algo!r}")
    h = hashlib.new(algo)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(src.url, timeout=60) as resp:  # noqa: S310
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
            modified = resp.headers.get("Last-Modified")
    except OSError as exc:
        os.unlink(tmp)
        raise BuildError(f"ADD {src.url}: download failed: {getattr(exc, 'reason', exc)}") from None
    if checksum and h.hexdigest() != want:
        os.unlink(tmp)
        raise BuildError(f"ADD {src.url}: checksum mismatch: expected {checksum}, got {algo}:{h.hexdigest()}")
    src.path, src.mode = Path(tmp), 0o600
    if modified:
        parsed = email.utils.parsedate_to_datetime(modified)
        src.mtime = parsed.timestamp()
    name = posixpath.basename(urllib.parse.urlparse(src.url or "").path) or "index.html"
    src.rel = name


class _TarOut:
    """Writes host files into a streaming tar with root ownership and optional forced mode."""

    def __init__(self, out: BinaryIO, chmod: int | None) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.chmod = chmod
        self.seen_dirs: set[str] = set()

    def add(self, host: Path, name: str, *, mode: int | None = None, mtime: float | None = None) -> None:
        ti = self.tar.gettarinfo(str(host), arcname=name)
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        if mtime is not None:
            ti.mtime = int(mtime)
        forced = mode if mode is not None else self.chmod
        if forced is not None and not ti.issym() and not ti.islnk():
            ti.mode = forced
        if ti.isreg():
            with open(host, "rb") as fh:
                self.tar.addfile(ti, fh)
        elif ti.isdir() or ti.issym() or ti.islnk() or ti.isfifo():
            self.tar.addfile(ti)
        # sockets and devices from a context are skipped, as Docker does

    def add_dir_entry(self, host: Path, name: str) -> None:
        if name not in self.seen_dirs:
            self.seen_dirs.add(name)
            self.add(host, name)

    def pass_through(self, archive: Path) -> None:
        """ADD: copy an archive's members (decompressed) into the output as they are."""
        try:
            with tarfile.open(str(archive), mode="r|*") as src:
                for m in src:
                    if m.isreg():
                        self.tar.addfile(m, src.extractfile(m))
                    else:
                        self.tar.addfile(m)
        except tarfile.TarError as exc:
            raise BuildError(f"ADD {archive.name}: cannot extract archive: {exc}") from None

    def close(self) -> None:
        self.tar.close()

    def abandon(self) -> None:
        """The reader went away (a full disk, a failed apply): drop the stream without the final
        write tarfile's __del__ would try on a closed pipe (a stray "Exception ignored" traceback)."""
        setattr(self.tar, "closed", True)  # noqa: B010 - not in the stubs
        stream = getattr(self.tar, "fileobj", None)
        if stream is not None and hasattr(stream, "closed"):
            stream.closed = True


def write_tar(plan: CopyPlan, out: BinaryIO) -> None:
    """Stream the plan's sources as a tar relative to ``plan.dest_dir``."""
    tw = _TarOut(out, plan.chmod)
    try:
        for src in plan.sources:
            if src.archive:
                tw.pass_through(src.path)
            elif src.is_dir:
                _walk_dir(tw, src, plan.excluded, plan.source_excluded)
            else:
                name = plan.rename or posixpath.basename(src.rel.rstrip("/")) or src.path.name
                tw.add(src.path, name, mode=src.mode, mtime=src.mtime)
        tw.close()
    except BaseException:
        tw.abandon()
        raise


def _walk_dir(tw: _TarOut, src: Source, excluded: Excluder | None, source_excluded: Excluder | None = None) -> None:
    """Contents of a directory source (not the directory itself), symlinks kept as symlinks."""
    base = src.path
    prefix = "" if src.rel in (".", "") else src.rel.rstrip("/") + "/"
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, base)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep_dirs = []
        for d in dirnames:
            full = Path(dirpath) / d
            ctx_rel = prefix + rel_dir + d
            if source_excluded and source_excluded(rel_dir + d, True):
                continue
            if os.path.islink(full):
                if not (excluded and excluded(ctx_rel, False)):
                    tw.add(full, rel_dir + d)
                continue
            if excluded and excluded(ctx_rel, True) and not _may_contain_exceptions(excluded, ctx_rel):
                continue
            if not (excluded and excluded(ctx_rel, True)):
                tw.add_dir_entry(full, rel_dir + d)
            keep_dirs.append(d)
        dirnames[:] = keep_dirs
        for f in sorted(filenames):
            ctx_rel = prefix + rel_dir + f
            if excluded and excluded(ctx_rel, False) or source_excluded and source_excluded(rel_dir + f, False):
                continue
            full = Path(dirpath) / f
            st = os.lstat(full)
            if stat.S_ISSOCK(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                continue
            _ensure_parents(tw, base, rel_dir)
            tw.add(full, rel_dir + f)


def _ensure_parents(tw: _TarOut, base: Path, rel_dir: str) -> None:
    """A file kept inside an excluded directory (a ``!`` exception) still needs its parents."""
    parts = [p for p in rel_dir.split("/") if p]
    for i in range(1, len(parts) + 1):
        name = "/".join(parts[:i])
        tw.add_dir_entry(base / name, name)


def _hidden(excluded: Excluder | None, ctx: Path, rel: str) -> bool:
    """Absent from the context as BuildKit sends it (.dockerignore; frontend.dockerignore.Matcher.hides)."""
    hides = getattr(excluded, "hides", None)
    if hides is not None:
        return bool(hides(ctx, rel))
    return bool(excluded and excluded(rel, os.path.isdir(ctx / rel)))


def _may_contain_exceptions(excluded: Excluder, rel: str) -> bool:
    probe = getattr(excluded, "may_contain_exceptions", None)
    return bool(probe(rel)) if probe else False


def match_any(patterns: list[str]) -> Excluder:
    """An excluder from plain ``--exclude`` glob patterns (fnmatch on the context-relative path)."""
    def excluded(rel: str, _is_dir: bool) -> bool:
        return any(fnmatch.fnmatch(rel, p.strip("/")) for p in patterns)
    return excluded
