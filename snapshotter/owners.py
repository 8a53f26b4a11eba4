"""Recorded owners: where bale cannot chown (a non-root process without user namespaces, the
ptrace isolation of a restricted pod), every file on disk belongs to bale's uid and the owner
the image gives it is kept beside it, in the style of containers/storage's
``user.containers.override_stat``:

* a regular file or directory: the ``user.bale.owner`` xattr, ``b"UID:GID"``;
* anything else (symlinks, fifos, sockets, device nodes; no ``user.*`` xattr is allowed on
  them): ``user.bale.owner.NAME`` on its parent directory (lost when it is renamed to another
  directory: it is root's there);
* no record: 0:0.

Recording is switched on once per process (``enable``) by the isolation that needs it; then
layer extraction and directory creation record instead of chowning, and layer writing reads the
records (``owner_of``). ``user.bale.`` xattrs never reach a layer and are never taken from one
(apply.DROPPED_XATTR_PREFIXES). Paths are host paths (short_path forms are fine).
"""
from __future__ import annotations

import errno
import os
import stat

XATTR = "user.bale.owner"
CHILD_PREFIX = XATTR + "."
_enabled = False


def enable(on: bool = True) -> None:
    """Record owners instead of chowning, for the rest of this process."""
    global _enabled
    _enabled = on


def recording() -> bool:
    """Whether owners are recorded (see ``enable``)."""
    return _enabled


def _where(host: str, mode: int) -> tuple[str, str]:
    """(path carrying the record, xattr name) for a file of ``mode`` at ``host``."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return host, XATTR
    parent, name = os.path.split(host.rstrip("/"))
    return parent or "/", CHILD_PREFIX + name


def record(host: str, uid: int, gid: int, mode: int | None = None) -> None:
    """Record ``uid``:``gid`` as the owner of ``host`` (never followed if a symlink); 0:0 removes
    the record. OSError when the file system refuses user xattrs (or the name is too long)."""
    if mode is None:
        mode = os.lstat(host).st_mode
    path, name = _where(host, mode)
    try:
        _write(path, name, uid, gid)
    except PermissionError:
        # user.* xattrs need write permission, which the owner lacks on a file it made without it (dpkg
        # creates files with mode 0 before it sets their owner): the owner's write bit for the call only
        old = stat.S_IMODE(os.lstat(path).st_mode)
        os.chmod(path, old | stat.S_IWUSR, follow_symlinks=False)
        try:
            _write(path, name, uid, gid)
        finally:
            os.chmod(path, old, follow_symlinks=False)


def record_at(at: str, name: str, uid: int, gid: int) -> None:
    """``record``'s write on the file a /proc fd link ``at`` leads to (followed, so no path is
    walked again), as the xattr ``name``: XATTR for that file itself, CHILD_PREFIX + NAME when
    ``at`` is the directory holding a symlink or special file NAME. OSError as ``record``."""
    try:
        _write(at, name, uid, gid, follow=True)
    except PermissionError:
        old = stat.S_IMODE(os.stat(at).st_mode)
        os.chmod(at, old | stat.S_IWUSR)
        try:
            _write(at, name, uid, gid, follow=True)
        finally:
            os.chmod(at, old)


def _write(path: str, name: str, uid: int, gid: int, follow: bool = False) -> None:
    if (uid, gid) == (0, 0):
        try:
            os.removexattr(path, name, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                raise
        return
    os.setxattr(path, name, f"{uid}:{gid}".encode(), follow_symlinks=follow)


def owner_of(host: str, st: os.stat_result) -> tuple[int, int]:
    """The recorded owner of ``host`` (stat ``st``), 0:0 when none is recorded."""
    path, name = _where(host, st.st_mode)
    try:
        raw = _get(path, name)
    except OSError:
        return 0, 0
    return parse_record(raw)


def parse_record(raw: bytes) -> tuple[int, int]:
    """The (uid, gid) a record's value ``b"UID:GID"`` holds; 0:0 for a malformed one (as for none)."""
    uid, _, gid = raw.decode("ascii", "replace").partition(":")
    try:
        return int(uid), int(gid)
    except ValueError:
        return 0, 0


def open_to_read(host: str, flags: int = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW) -> int:
    """``os.open(host, flags)``; where that is refused and owners are recorded (bale owns every file
    but has no CAP_DAC_OVERRIDE: a mode-0000 /etc/shadow), once more with the owner's read bit set
    for the open only. OSError as os.open's otherwise."""
    try:
        return os.open(host, flags)
    except PermissionError:
        if not _enabled:
            raise
    mode = os.lstat(host).st_mode
    os.chmod(host, stat.S_IMODE(mode) | stat.S_IRUSR, follow_symlinks=False)
    try:
        return os.open(host, flags)
    finally:
        os.chmod(host, stat.S_IMODE(mode), follow_symlinks=False)


def has_record(host: str, st: os.stat_result) -> bool:
    """Whether an owner is recorded for ``host`` (0:0 never is)."""
    path, name = _where(host, st.st_mode)
    try:
        _get(path, name)
        return True
    except OSError:
        return False


def _get(path: str, name: str) -> bytes:
    """getxattr of a record; user.* xattrs need read permission, which the owner may have taken
    away (a RUN's ``chmod 4311`` binary, a mode-0000 directory): then once more with the owner's read
    bit set for the call only (read as 0:0, such a file became a set-uid root one in the layer).
    OSError (ENODATA: no record)."""
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except PermissionError:
        if not _enabled:
            raise
    old = stat.S_IMODE(os.lstat(path).st_mode)
    os.chmod(path, old | stat.S_IRUSR, follow_symlinks=False)
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    finally:
        os.chmod(path, old, follow_symlinks=False)
