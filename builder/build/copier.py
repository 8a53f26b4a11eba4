"""COPY/ADD sources on the host side: resolve them inside a context directory,
then hand their entries, named relative to the destination directory, to the
copier in the container: as direct-copy items (``plan_items``: the
snapshotter's ``copytree`` copies each file straight from the source directory,
contents moved by the kernel) or, for ADD's archives, as one tar applied by the
confined ``apply_tar`` (buildah's copier.Get / copier.Put cut). Both carry the
same entries with the same owners, modes, times and xattrs.

Rules (BuildKit's, see plan_copy): wildcards are Go's filepath.Match (gomatch);
a directory source copies its contents; each source and each wildcard match
goes to DEST in order, into it when it is a directory by then, else becoming
it. ADD extracts local tar archives (plain, gzip, bzip2, xz; headers bounded
by snapshotter.tarlimits) and fetches URLs (named as BuildKit names them, mode
0600 unless --chmod, optional ``--checksum``). Entries carry their xattrs;
names are bytes (surrogate-escaped) throughout.
"""
from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import posixpath
import re
import stat
import tarfile
import tempfile
import urllib.parse
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable

from builder.build import gomatch
from builder.build.tarstream import TarWriter
from builder.errors import BuildError, UsageError
from builder.lazyimport import lazy
from builder.sandbox.users import _read_db
from snapshotter import owners
from snapshotter.apply import DROPPED_XATTR_PREFIXES
from snapshotter.copytree import Item, encode_item
from snapshotter.diff import pax_xattrs
from snapshotter.safepath import reach, secure_join
from snapshotter.tarlimits import open_stream

if TYPE_CHECKING:
    import email.utils as email_utils
    import urllib.request as url_request
else:  # ADD from a URL only, on bale's side (never in a namespace worker): ~15 ms of start-up otherwise
    email_utils = lazy("email.utils")
    url_request = lazy("urllib.request")

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
    mode: int | None = None  # forced mode
    mtime: float | None = None
    #: where it lands relative to CopyPlan.dest_dir ("" = a directory's contents go right there);
    #: set by plan_copy, None = the source's base name
    name: str | None = None
    #: COPY --from keeps owners (fsutil copy is `cp -a`); the context's files are root's
    keep_owner: bool = False
    #: COPY --from: a socket below this directory becomes an empty regular file with the socket's
    #: owner, mode, times and xattrs, as fsutil's copyDevice makes it (copy/copy_nowindows.go:33-45
    #: clears S_IFSOCK from the mode given to mknod: type 0 is a regular file); the context's
    #: sockets are left out (fsutil's walker sends none)
    socket_files: bool = False


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
    #: the directory made (mkdir -p, every new level owned by the --chown owner) before extraction
    mkdir: str = ""

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


def _parse_id(text: str) -> int | None:
    """client/llb/fileop.go parseUID: "root" is 0, else a decimal int32."""
    if text == "root":
        return 0
    try:
        value = int(text, 10)
    except ValueError:
        return None
    return value if 0 <= value < 1 << 31 else None


_INT32 = re.compile(r"[+-]?[0-9]+")  # strconv.ParseInt base 10: a sign, ASCII digits (no "_", no spaces)
#: uint32(-1): what ``--chown=-1`` becomes on the wire; lchown(2) takes it as "leave this id"
_KEEP = 0xFFFFFFFF


def _parse_spec_id(text: str) -> int | None:
    """An id of a --chown spec as BuildKit reads it: client/llb/fileop.go:257-266 parseUID, "root"
    or ``strconv.ParseInt(str, 10, 32)`` (an optional sign, decimal digits, an int32), sent as
    ``uint32(up.UID)`` (fileop.go:329), so a negative id wraps: -1 is 4294967295. None: a name."""
    if text == "root":
        return 0
    if not _INT32.fullmatch(text):
        return None
    value = int(text, 10)
    return value & 0xFFFFFFFF if -(1 << 31) <= value < 1 << 31 else None


def resolve_chown(rootfs: Path, spec: str) -> tuple[int, int]:
    """uid, gid for ``--chown=USER[:GROUP]`` (or the USER of a WORKDIR) as BuildKit computes them
    (client/llb/fileop.go:231-266 WithUser, solver/llbsolver/ops/user_linux.go:23-119 readUser):
    a numeric user alone gives that number as gid too; a name gives its uid and primary gid from
    the image's /etc/passwd; a group (number or /etc/group name) replaces the gid. A name missing
    from the files leaves 0 (user) or the user's gid (group), as BuildKit does.

    A negative id wraps to uint32 (``_parse_spec_id``); -1 becomes (uid_t)-1, which fsutil's
    ``os.Lchown(p, user.UID, user.GID)`` (copy/mkdir_unix.go:44, after copy_linux.go
    copyFileInfo) passes to lchown(2) as "unchanged": the entry keeps the owner the copy made
    it with, root's (0), whatever the source's owner. So -1 reads as 0 here, alone or on either
    side (``5:-1`` is 5:0, not 5:5); -2 and below are the ids 4294967294 and down."""
    user, _, group = spec.partition(":")
    uid = gid = 0
    num = _parse_spec_id(user)
    if num is not None:
        uid = gid = num
    elif user:
        entry = next((p for p in _read_db(rootfs, "passwd") if p[0] == user and len(p) > 3), None)
        if entry is not None:
            u, g = _parse_id(entry[2]), _parse_id(entry[3])
            if u is None or g is None:
                raise BuildError(f"--chown={spec}: /etc/passwd of the image has a non-numeric id for {user}")
            uid, gid = u, g
    if group:
        num = _parse_spec_id(group)
        if num is not None:
            gid = num
        else:
            g_entry = next((g for g in _read_db(rootfs, "group") if g[0] == group and len(g) > 2), None)
            if g_entry is not None:
                g = _parse_id(g_entry[2])
                if g is None:
                    raise BuildError(f"--chown={spec}: /etc/group of the image has a non-numeric id for {group}")
                gid = g
    return (0 if uid == _KEEP else uid), (0 if gid == _KEEP else gid)


def _kind_error(st: os.stat_result) -> str | None:
    if stat.S_ISFIFO(st.st_mode):
        return "is a named pipe (FIFO)"
    if stat.S_ISSOCK(st.st_mode):
        return "is a socket"
    return None


def _has_magic(s: str) -> bool:
    return gomatch.has_wildcards(s)


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


def resolve_in_root(root: Path, patterns: list[str], *, add: bool = False, excluded: Excluder | None = None,
                    where: str = "") -> list[Source]:
    """Expand each pattern inside ``root`` as BuildKit does (gomatch.resolve_wildcards: Go's
    filepath.Match, dot-files included; symlinks resolved with ``root`` as /, the final one
    followed: FollowSymlinks in dockerfile2llb/convert_copy.go:276). Every pattern must match
    something that is not excluded, except that a wildcard may match nothing (BuildKit's
    AllowEmptyWildcard; its testEmptyWildcard builds `COPY foo nomatch* /`). A FIFO or socket named
    as a source is an error (checked with lstat before anything opens it); so is an entry that
    cannot be read."""
    out: list[Source] = []
    where = where or f"in context {root}"
    for pat in patterns:
        if add and is_url(pat):
            out.append(Source(Path(), pat, False, url=pat))
            continue
        clean = posixpath.normpath("/" + pat)
        try:
            cpaths = gomatch.resolve_wildcards(root, clean)
        except OSError as exc:
            raise BuildError(f"copy source {pat!r}: cannot read {exc.filename}: {exc.strerror}") from None
        hits: list[tuple[str, Path]] = []
        for cpath in cpaths:
            rel = cpath.lstrip("/") or "."
            host = secure_join(root, cpath)
            with reach(host) as path:  # a source path longer than PATH_MAX: through directory fds
                if not os.path.lexists(path):
                    continue
            if excluded and rel != "." and _hidden(excluded, root, rel):
                continue  # absent from the context BuildKit sends (fsutil filter.go)
            hits.append((rel, host))
        if not hits:
            if gomatch.has_wildcards(clean):
                continue  # AllowEmptyWildcard (convert_copy.go:283, backend.go:248-251): nothing to copy
            raise BuildError(f"copy source {pat!r}: no such file or directory {where}")
        for rel, host in hits:
            with reach(host) as path:
                st = os.stat(path)
                readable = os.access(path, os.R_OK | (os.X_OK if stat.S_ISDIR(st.st_mode) else 0)) or (
                    owners.recording() and st.st_uid == os.geteuid())  # bale's own: opened to read anyway
                archive = add and stat.S_ISREG(st.st_mode) and _is_archive(Path(path))
            bad = _kind_error(st)
            if bad:
                raise BuildError(f"copy source {pat!r}: {rel} {bad}: only files, directories and symbolic links "
                                 "can be copied")
            is_dir = stat.S_ISDIR(st.st_mode)
            if not readable:
                raise BuildError(f"copy source {rel}: permission denied")
            out.append(Source(host, rel, is_dir, archive=archive))
    return out


def resolve_sources(context: Path, patterns: list[str], *, add: bool = False,
                    excluded: Excluder | None = None) -> list[Source]:
    """Expand wildcards inside ``context``; every pattern must match something."""
    return resolve_in_root(context.resolve(), patterns, add=add, excluded=excluded, where=f"in context {context}")


def plan_copy(sources: list[Source], dest: str, dest_kind: str | None, *, chmod: int | None = None,
              excluded: Excluder | None = None) -> CopyPlan:
    """Decide where each source lands. ``dest`` is absolute; ``dest_kind`` is what exists there in
    the container ("dir", "file" or None).

    BuildKit (fsutil copy/copy.go:146-180, prepareTargetDir, run once per source and per wildcard
    match, in order): a DEST ending in ``/`` is made first; a file goes *into* DEST when DEST is a
    directory by then, else it *becomes* DEST (so several files to a new DEST without a slash leave
    the last one there, issue 8 class 4); a directory's contents go into DEST, which is made if it
    is missing; a directory onto an existing file fails ("cannot copy to non-directory",
    copy.go:651). ADD archives unpack into DEST as a directory (solver/llbsolver/file/unpack.go:25-29).
    """
    if not sources:  # only wildcards that matched nothing: BuildKit creates nothing either
        return CopyPlan("/", [], "", chmod, excluded, mkdir="/")
    slash = dest.endswith("/")
    dest = posixpath.normpath(dest) if dest not in ("/", "") else "/"
    if slash or dest == "/" or dest_kind == "dir":
        for s in sources:
            s.name = "" if (s.is_dir or s.archive) else _base(s)
        return CopyPlan(dest, sources, "", chmod, excluded, mkdir=dest)
    parent, base = posixpath.split(dest)
    parent = parent or "/"
    state = dest_kind
    for s in sources:
        if s.is_dir or s.archive:
            if state == "file":
                raise BuildError(f"cannot copy directory {s.rel} to non-directory {dest}")
            state = "dir"
            s.name = base
        elif state == "dir":
            s.name = base + "/" + _base(s)
        else:
            s.name, state = base, "file"
    if state == "dir":  # it began with a directory or archive: DEST is that directory
        for s in sources:
            s.name = (s.name or "")[len(base) + 1:]
        return CopyPlan(dest, sources, "", chmod, excluded, mkdir=dest)
    plan = CopyPlan(parent, sources, "", chmod, excluded, mkdir=parent)
    if len(sources) == 1 and not (sources[0].is_dir or sources[0].archive):
        plan.rename = base
    return plan


def _base(s: Source) -> str:
    return posixpath.basename(s.rel.rstrip("/")) or s.path.name


def url_file_name(url: str) -> str:
    """The file name ADD gives a URL: Go's path.Base of the URL path, "__unnamed__" when that is
    "." or "/" (dockerfile2llb/convert_copy.go:194-200)."""
    try:
        upath = urllib.parse.urlsplit(url).path
    except ValueError:
        return "__unnamed__"
    base = _go_path_base(urllib.parse.unquote(upath))
    return "__unnamed__" if base in (".", "/") else base


def _go_path_base(p: str) -> str:
    """Go's path.Base: "" -> ".", trailing slashes dropped, all slashes -> "/"."""
    if p == "":
        return "."
    p = p.rstrip("/")
    if p == "":
        return "/"
    return p.rsplit("/", 1)[-1]


def fetch_url(src: Source, tmp_dir: Path, checksum: str | None) -> None:
    """Download ``src.url`` to a temp file (streamed), verify ``checksum``; fills in path/mode/mtime
    and the name BuildKit gives it (url_file_name). The file is 0600 unless --chmod says otherwise
    (BuildKit's HTTP source writes 0600; the copy's Mode replaces it, backend.go:217-221)."""
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="add-url-")
    algo, _, want = (checksum or "sha256:").partition(":")
    if algo not in ("sha256", "sha384", "sha512"):
        os.close(fd)
        os.unlink(tmp)
        raise UsageError(f"ADD {src.url}: unsupported checksum algorithm {algo!r}")
    h = hashlib.new(algo)
    try:
        with os.fdopen(fd, "wb") as out, url_request.urlopen(src.url or "", timeout=60) as resp:  # noqa: S310
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
            modified = resp.headers.get("Last-Modified")
    except (OSError, ValueError) as exc:
        os.unlink(tmp)
        raise BuildError(f"ADD {src.url}: download failed: {getattr(exc, 'reason', exc)}") from None
    if checksum and h.hexdigest() != want:
        os.unlink(tmp)
        raise BuildError(f"ADD {src.url}: checksum mismatch: expected {checksum}, got {algo}:{h.hexdigest()}")
    src.path, src.mode = Path(tmp), 0o600
    if modified:
        try:
            src.mtime = email_utils.parsedate_to_datetime(modified).timestamp()
        except (TypeError, ValueError):
            pass
    src.rel = url_file_name(src.url or "")


#: extended attributes COPY leaves out: overlay's and bale's own are never user data (fsutil's
#: stat carries the others and copy.go:469 copies them), nor SELinux labels
_DROPPED_XATTRS = (*DROPPED_XATTR_PREFIXES, "security.selinux")


class _TarOut:
    """Writes host files into a streaming tar: root-owned (or with their owners for COPY --from),
    xattrs kept, optional forced mode. Unreadable entries are errors naming them."""

    def __init__(self, out: BinaryIO, chmod: int | None) -> None:
        self.tar = TarWriter(out)
        # tarfile's gettarinfo (lstat to TarInfo, hard links within this stream as LNKTYPE); the
        # bytes go through TarWriter (bodies sent by the kernel), nothing is written to this one
        self._info = tarfile.TarFile(fileobj=io.BytesIO(), mode="w", format=tarfile.PAX_FORMAT,
                                     encoding="utf-8", errors="surrogateescape")
        self.chmod = chmod
        self.seen_dirs: set[str] = set()

    def add(self, host: Path | str, name: str, *, mode: int | None = None, mtime: float | None = None,
            keep_owner: bool = False, rel: str = "", root: Path | None = None, sub: str = "",
            st: os.stat_result | None = None) -> None:
        try:
            with reach(host) as path:  # a context deeper than PATH_MAX: through directory fds
                self._add(path, name, mode, mtime, keep_owner, rel)
        except BrokenPipeError:  # the reader failed: its error is the one to report
            raise
        except OSError as exc:  # a directory on the way to ``host`` cannot be opened
            raise BuildError(f"copy source {rel or name}: {exc.strerror or exc}") from None

    def _add(self, host: str, name: str, mode: int | None, mtime: float | None, keep_owner: bool,
             rel: str) -> None:
        try:
            ti = self._info.gettarinfo(host, arcname=name)
        except OSError as exc:
            raise BuildError(f"copy source {rel or name}: {exc.strerror}") from None
        socket_file = ti is None and stat.S_ISSOCK(os.lstat(host).st_mode)
        if socket_file:  # only a COPY --from walk hands one over (Source.socket_files): an empty file
            ti = tarfile.TarInfo(name)
            st = os.lstat(host)
            ti.mode, ti.uid, ti.gid, ti.mtime = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime
        elif ti is None or not (ti.type in (tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE) or ti.isreg()
                                or ti.isdir() or ti.issym() or ti.islnk()):
            return  # nothing else tar can hold
        if not keep_owner:
            ti.uid = ti.gid = 0
        elif owners.recording():  # another stage's files are bale's on disk: their recorded owners
            ti.uid, ti.gid = owners.owner_of(str(host), os.lstat(host))
        ti.uname = ti.gname = ""
        if mtime is not None:
            ti.mtime = int(mtime)
        forced = self.chmod if self.chmod is not None else mode  # --chmod beats ADD URL's 0600
        if forced is not None and not ti.issym() and not ti.islnk():
            ti.mode = forced
        xattrs = pax_xattrs(host, _DROPPED_XATTRS)
        if xattrs:
            ti.pax_headers = {**ti.pax_headers, **xattrs}
        if ti.isreg() and not socket_file:
            try:
                fd = owners.open_to_read(str(host), os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise BuildError(f"copy source {rel or name}: {exc.strerror}") from None
            try:
                self.tar.add_fd(ti, fd, rel or name)
            except BrokenPipeError:  # the reader failed (a full disk...): its error is the one to report
                raise
            except OSError as exc:
                raise BuildError(f"copy source {rel or name}: {exc.strerror or exc}") from None
            finally:
                os.close(fd)
        else:
            self.tar.header(ti)

    def add_dir_entry(self, host: Path | str, name: str, *, keep_owner: bool = False, rel: str = "",
                      root: Path | None = None, sub: str = "") -> None:
        if name not in self.seen_dirs:
            self.seen_dirs.add(name)
            self.add(host, name, keep_owner=keep_owner, rel=rel)

    def pass_through(self, archive: Path, prefix: str) -> None:
        """ADD: the archive's members (decompressed, sparse files expanded, names under ``prefix``)
        as plain entries; headers bounded as Go's archive/tar bounds them (archive_limits)."""
        try:
            with open(archive, "rb") as raw, open_stream(raw) as src:
                for m in src:
                    if prefix:
                        m.name = prefix + "/" + m.name.lstrip("/")
                        if m.islnk():
                            m.linkname = prefix + "/" + m.linkname.lstrip("/")
                    if m.isreg():
                        data = src.extractfile(m)
                        m.sparse = None
                        m.type = tarfile.REGTYPE
                        m.pax_headers = {k: v for k, v in m.pax_headers.items() if not k.startswith("GNU.sparse.")}
                        self.tar.add_stream(m, data)
                    else:
                        self.tar.header(m)
        except (tarfile.TarError, EOFError, OSError, zlib_error()) as exc:
            raise BuildError(f"ADD {archive.name}: cannot extract archive: {exc}") from None

    def close(self) -> None:
        self.tar.close()

    def abandon(self) -> None:
        """The reader went away (a full disk, a failed apply): nothing more is written (what the
        writer held back is dropped with it; the caller closes ``out``)."""


class _ItemOut:
    """The walk's entries as direct-copy items (snapshotter.copytree.Item), handed to ``emit``.
    A regular file the builder cannot read is an error here, as opening it for the tar is (the
    copier may run with more rights: root of a user namespace reads files of the mapped ids)."""

    def __init__(self, emit: Callable[[Item], None], chmod: int | None) -> None:
        self.emit, self.chmod = emit, chmod
        self.check_access = os.geteuid() != 0
        self.seen_dirs: set[str] = set()

    def add(self, host: Path | str, name: str, *, mode: int | None = None, mtime: float | None = None,
            keep_owner: bool = False, rel: str = "", root: Path | None = None, sub: str = "",
            st: os.stat_result | None = None, once: bool = False) -> None:
        if root is None:  # a file source: its directory is the root
            root, sub = Path(host).parent, Path(host).name
        forced = self.chmod if self.chmod is not None else mode
        if self.check_access and not once:
            try:
                with reach(host) as path:  # a context deeper than PATH_MAX: through directory fds
                    if st is None:
                        st = os.lstat(path)
                    readable = not stat.S_ISREG(st.st_mode) or os.access(path, os.R_OK)
            except OSError as exc:
                raise BuildError(f"copy source {rel or name}: {exc.strerror}") from None
            if not readable:
                raise BuildError(f"copy source {rel or name}: Permission denied")
        self.emit(Item(os.fspath(root), sub, name, forced, None if mtime is None else int(mtime), keep_owner,
                       rel or name, once))

    def add_dir_entry(self, host: Path | str, name: str, *, keep_owner: bool = False, rel: str = "",
                      root: Path | None = None, sub: str = "") -> None:
        if name not in self.seen_dirs:  # _ensure_parents names them again for every kept file
            self.seen_dirs.add(name)
            self.add(host, name, keep_owner=keep_owner, rel=rel, root=root, sub=sub, once=True)


def direct(plan: CopyPlan) -> bool:
    """Whether the plan can be copied directly (snapshotter.copytree) rather than through a tar:
    everything but ADD's archives, which are unpacked from their tar, and any copy while owners
    are recorded rather than set (the ptrace isolation: snapshotter.owners; the tar path reads and
    writes the records)."""
    return not owners.recording() and not any(s.archive for s in plan.sources)


def plan_items(plan: CopyPlan, emit: Callable[[Item], None]) -> None:
    """The plan's entries, in order, as direct-copy items (``direct(plan)`` must hold): what
    write_tar would put in its tar, with the same names, exclusions, owners, modes and mtimes."""
    out = _ItemOut(emit, plan.chmod)
    for src in plan.sources:
        name = src.name if src.name is not None else (plan.rename or _base(src))
        if src.is_dir:
            _walk_dir(out, src, name, plan.excluded, plan.source_excluded)
        else:
            out.add(src.path, name, mode=src.mode, mtime=src.mtime, keep_owner=src.keep_owner, rel=src.rel)


def write_items(plan: CopyPlan, out: BinaryIO) -> None:
    """``plan_items`` as a stream of JSON lines (copytree.encode_item) for a copier elsewhere."""
    def emit(item: Item) -> None:
        out.write(encode_item(item))
    plan_items(plan, emit)


def zlib_error() -> type[Exception]:
    return zlib.error


def write_tar(plan: CopyPlan, out: BinaryIO) -> None:
    """Stream the plan's sources as a tar relative to ``plan.dest_dir``."""
    tw = _TarOut(out, plan.chmod)
    try:
        for src in plan.sources:
            name = src.name if src.name is not None else (plan.rename or _base(src))
            if src.archive:
                tw.pass_through(src.path, name)
            elif src.is_dir:
                _walk_dir(tw, src, name, plan.excluded, plan.source_excluded)
            else:
                tw.add(src.path, name, mode=src.mode, mtime=src.mtime, keep_owner=src.keep_owner, rel=src.rel)
        tw.close()
    except BaseException:
        tw.abandon()
        raise


def _walk_dir(tw: "_TarOut | _ItemOut", src: Source, name: str, excluded: Excluder | None,
              source_excluded: Excluder | None = None) -> None:
    """Contents of a directory source (not the directory itself) under ``name``, symlinks kept as
    symlinks, in lexical order. A directory that cannot be listed is an error naming it."""
    base = src.path
    prefix = "" if src.rel in (".", "") else src.rel.rstrip("/") + "/"
    out_prefix = name + "/" if name else ""

    # an explicit stack (not recursion: a context may be deeper than Python's recursion limit),
    # visiting entries in lexical order, each directory's contents right after the directory
    # ``complete``: every directory above was written (else a file kept by a ``!`` exception
    # inside an excluded directory needs its parents written first)
    stack: list[tuple[str, str, list[str], bool]] = []

    def listing(dirpath: str, rel_dir: str) -> list[str]:
        try:
            with reach(dirpath) as path:
                return sorted(os.listdir(path), reverse=True)
        except OSError as exc:
            where = (prefix + rel_dir).rstrip("/") or src.rel
            raise BuildError(f"copy source {where}: cannot read directory: {exc.strerror}") from None

    top = os.fspath(base)
    stack.append((top, "", listing(top, ""), True))
    while stack:
        dirpath, rel_dir, names, complete = stack[-1]
        if not names:
            stack.pop()
            continue
        n = names.pop()
        full = os.path.join(dirpath, n)
        ctx_rel = prefix + rel_dir + n
        try:
            with reach(full) as path:
                st = os.lstat(path)
        except OSError as exc:
            raise BuildError(f"copy source {ctx_rel}: {exc.strerror}") from None
        is_dir = stat.S_ISDIR(st.st_mode)
        if source_excluded and source_excluded(rel_dir + n, is_dir):
            continue
        if is_dir:
            hit = bool(excluded and excluded(ctx_rel, True))
            if hit and not _may_contain_exceptions(excluded, ctx_rel):  # type: ignore[arg-type]
                continue
            if not hit:
                if not complete:
                    _ensure_parents(tw, base, rel_dir, out_prefix, src.keep_owner)
                tw.add_dir_entry(full, out_prefix + rel_dir + n, keep_owner=src.keep_owner, rel=ctx_rel,
                                 root=base, sub=rel_dir + n)
            stack.append((full, rel_dir + n + "/", listing(full, rel_dir + n + "/"), not hit))
            continue
        if excluded and excluded(ctx_rel, False):
            continue
        if stat.S_ISSOCK(st.st_mode) and not src.socket_files:
            continue  # fsutil's walker drops the socket bit; nothing readable to copy
        if not complete:
            _ensure_parents(tw, base, rel_dir, out_prefix, src.keep_owner)
        tw.add(full, out_prefix + rel_dir + n, keep_owner=src.keep_owner, rel=ctx_rel, root=base, sub=rel_dir + n,
               st=st)

    # the destination directory itself is made by the applier (mkdir with the --chown owner)


def _ensure_parents(tw: "_TarOut | _ItemOut", base: Path, rel_dir: str, out_prefix: str, keep_owner: bool) -> None:
    """A file kept inside an excluded directory (a ``!`` exception) still needs its parents."""
    parts = [p for p in rel_dir.split("/") if p]
    for i in range(1, len(parts) + 1):
        rel = "/".join(parts[:i])
        tw.add_dir_entry(base / rel, out_prefix + rel, keep_owner=keep_owner, root=base, sub=rel)


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
