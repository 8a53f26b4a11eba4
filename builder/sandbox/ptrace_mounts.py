"""RUN mounts in the ptrace isolation (ptrace.py), where nothing can be mounted: each BindSpec
becomes a proot bind ``-b HOST:GUEST`` plus a Landlock rule for GUEST in the RUN's domain (and for
HOST in proot's), with the semantics the rootless sandbox gives them (binds.py):

* ``cache`` (``shared``): the store's cache directory itself, every right;
* a read-only ``bind`` (context, stage, image): the source itself, read (and execute) rights only,
  so a write fails with EACCES where the rootless sandbox gives EROFS;
* a writable ``bind`` that is not shared: a throw-away copy of the source in the RUN's private
  directory (never the live source: issue 12), removed after the RUN with that directory;
* ``tmpfs``: an empty 1777 directory of the private directory, removed after;
* ``secret``: a file with the secret's bytes, ``mode`` and recorded ``uid``/``gid``, bound read-only,
  written to memory-backed storage (a tmpfs or ramfs such as the pod's /dev/shm, see
  ``memory_dir``) and removed after; only where the pod has none is it written to the private
  directory on disk (0700, removed after the RUN; bale warns once).

The mount points are made in the rootfs before proot starts and dropped from the layer while
empty, as for every isolation (ptrace.py's own binds).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ContainerError
from builder.sandbox import landlock
from builder.sandbox.spec import BindSpec
from snapshotter import owners
from snapshotter.safepath import secure_join

log = logging.getLogger("bale")
#: file system types that keep their files in memory
MEMORY_FS = ("tmpfs", "ramfs")
_warned: set[str] = set()


@dataclass(frozen=True)
class PtraceBind:
    """One proot bind: ``host`` shown at ``guest`` (the RUN's path, symlinks of the rootfs resolved),
    with the Landlock ``rights`` both domains give it."""

    guest: str
    host: str
    rights: int
    is_dir: bool
    #: the live source, kept after the RUN (a cache mount): what a non-root RUN makes there is its user's
    shared: bool = False


def _mount_types() -> list[tuple[str, str]]:
    """(mount point, file system type) of this process's mounts, from /proc/self/mountinfo."""
    out: list[tuple[str, str]] = []
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) > 4 and right:
            point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
            out.append((point, right.split()[0]))
    return out


def fs_type(path: str) -> str:
    """The file system type of the mount holding ``path`` (its last mount wins), "" when unknown."""
    real = os.path.realpath(path)
    best, kind = "", ""
    for point, fstype in _mount_types():
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def memory_dir() -> str | None:
    """A directory on memory-backed storage that bale may write (tried in order: /dev/shm,
    $XDG_RUNTIME_DIR), or None when the pod has none."""
    for cand in ("/dev/shm", os.environ.get("XDG_RUNTIME_DIR", "")):
        if cand and os.path.isdir(cand) and os.access(cand, os.W_OK | os.X_OK) and fs_type(cand) in MEMORY_FS:
            return cand
    return None


def _guest(root: Path, dest: str) -> str:
    """``dest`` as the RUN's path with the rootfs's symlinks resolved (chroot semantics)."""
    rel = os.path.relpath(secure_join(root, dest), root)
    return "/" if rel == "." else "/" + rel


def _read_rights(is_dir: bool) -> int:
    return landlock.READ_EXEC if is_dir else landlock.READ_FILE | landlock.EXECUTE


def _copy(source: str, dest: Path) -> None:
    """A throw-away copy of ``source`` at ``dest`` (symlinks kept as links, modes kept)."""
    if os.path.isdir(source):
        shutil.copytree(source, dest, symlinks=True)
        os.chmod(dest, os.stat(source).st_mode & 0o7777)
    else:
        shutil.copy2(source, dest, follow_symlinks=True)


def prepare(mounts: list[BindSpec], root: Path, priv: Path, everything: int) -> tuple[list[PtraceBind], list[Path]]:
    """The proot binds for ``mounts`` over the rootfs ``root``: copies, tmpfs directories and the
    secrets' directory are made under ``priv`` (the RUN's private directory, removed after it) or
    in memory; returns the binds and the extra directories to remove after the RUN (memory).
    ``everything``: the file system rights of this Landlock ABI. ContainerError for a source that
    does not exist."""
    extra: list[Path] = []
    try:
        return _prepare(mounts, root, priv, everything, extra), extra
    except BaseException:
        for d in extra:
            shutil.rmtree(d, ignore_errors=True)
        raise


def _prepare(mounts: list[BindSpec], root: Path, priv: Path, everything: int, extra: list[Path]) -> list[PtraceBind]:
    binds: list[PtraceBind] = []
    secrets: Path | None = None
    for n, m in enumerate(mounts):
        guest = _guest(root, m.dest)
        if m.type == "tmpfs":
            d = priv / f"tmpfs{n}"
            d.mkdir()
            os.chmod(d, 0o1777)
            binds.append(PtraceBind(guest, str(d), everything, True))
            continue
        if m.type == "secret":
            if secrets is None:
                mem = memory_dir()
                if mem is None and "secret" not in _warned:
                    _warned.add("secret")
                    log.warning("ptrace isolation: no memory-backed directory (/dev/shm, $XDG_RUNTIME_DIR) is "
                                "writable here: RUN secrets are written to bale's private temporary directory "
                                "on disk (0700) for the RUN and removed after it")
                secrets = Path(tempfile.mkdtemp(prefix="bale-secrets-", dir=mem)) if mem else priv / "secrets"
                if mem:
                    extra.append(secrets)
                else:
                    secrets.mkdir(mode=0o700)
            f = secrets / f"s{n}"
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(m.data)
                while view:
                    view = view[os.write(fd, view):]
                # the owner's read bit always: the RUN really runs as bale's uid, which owns the file
                # (a root RUN reads a mode 0 secret in Docker too, through CAP_DAC_OVERRIDE)
                os.fchmod(fd, m.mode & 0o7777 | 0o400)
            finally:
                os.close(fd)
            if owners.recording():
                owners.record(str(f), m.uid, m.gid)
            binds.append(PtraceBind(guest, str(f), landlock.READ_FILE, False))
            continue
        source = m.host_source()
        if not os.path.exists(source):
            raise ContainerError(f"mount source {m.source}: No such file or directory")
        is_dir = os.path.isdir(source)
        if m.readonly:
            binds.append(PtraceBind(guest, os.path.realpath(source), _read_rights(is_dir), is_dir))
        elif m.shared:
            binds.append(PtraceBind(guest, os.path.realpath(source), everything, is_dir, shared=True))
        else:
            copy = priv / f"copy{n}"
            _copy(source, copy)
            binds.append(PtraceBind(guest, str(copy), everything if is_dir else landlock.FILE_RIGHTS, is_dir))
    return binds


def file_rights(b: PtraceBind) -> int:
    """``b.rights`` as Landlock accepts them for its host: a rule on a file takes file rights only."""
    return b.rights if b.is_dir else b.rights & landlock.FILE_RIGHTS
