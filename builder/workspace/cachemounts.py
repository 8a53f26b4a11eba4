"""RUN ``--mount=type=cache`` instances: which directory a RUN gets, by the mount's ``sharing``.

Spec, BuildKit solver/llbsolver/mounts/mount.go: a cache id has any number of instances
(``SearchCacheDir`` by key). ``getRefCacheDirNoCache`` reuses the first instance no one holds
(``GetMutable``; ``cache.ErrLocked`` while another exec has it) and makes a new, empty one when
all are held, unless it was asked to ``block`` (``locked``): then it waits, polling every 100 ms,
until one is let go. ``shared`` users join one instance (``globalCacheRefs``) that ``private``
and ``locked`` users then see as held; ``private`` never waits (a new or another free instance).

Layout: ``ROOT/cache-mounts/NAME`` is a cache id's first instance (NAME = the first 24 hex digits
of sha256(id), the name the remote cache exchanges, builder.image.mountcache) and ``NAME-2``,
``NAME-3``... the further ones, kept for later RUNs as BuildKit keeps its refs. Holding is an
flock on the instance directory, shared (``LOCK_SH``) for ``shared`` users and exclusive for the
others, so it holds across threads (parallel stages) and bale processes on one store; the choice
itself is made under an exclusive flock on ``cache-mounts`` (BuildKit's ``cacheRefsLocker`` per
key), so two users never both make the same new instance. One difference: BuildKit's shared
users all join the instance the first of them took even when a freer one exists; here a
shared user takes the first instance not held exclusively."""
from __future__ import annotations

import fcntl
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

#: hex digits of a first instance's name
NAME_LEN = 24
#: BuildKit's wait between two looks for a free instance (mount.go: time.After(100 * time.Millisecond))
POLL_S = 0.1
SHARING = ("shared", "private", "locked")


def mount_name(cache_id: str) -> str:
    """The first instance's directory name of a cache id (the id, or the target when none)."""
    return hashlib.sha256(cache_id.encode()).hexdigest()[:NAME_LEN]


def is_first_instance(name: str) -> bool:
    """Whether a directory name of ``cache-mounts`` is a cache id's first instance."""
    return len(name) == NAME_LEN and all(c in "0123456789abcdef" for c in name)


def instances(parent: Path, name: str) -> list[Path]:
    """The existing instances of ``name`` under ``parent``, first instance first, then by number."""
    found: list[tuple[int, Path]] = []
    try:
        entries = os.listdir(parent)
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry == name:
            found.append((1, parent / entry))
        elif entry.startswith(name + "-") and entry[len(name) + 1:].isdigit():
            found.append((int(entry[len(name) + 1:]), parent / entry))
    return [p for _, p in sorted(found) if p.is_dir()]


@dataclass
class HeldCache:
    """One instance as a RUN holds it: ``path`` to bind, ``fd`` the open directory carrying the flock."""
    path: Path
    fd: int

    def release(self) -> None:
        """Let the instance go (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _try_hold(path: Path, exclusive: bool) -> HeldCache | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # pruned meanwhile
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return HeldCache(path, fd)


def acquire(parent: Path, name: str, sharing: str) -> HeldCache:
    """Hold an instance of cache ``name`` under ``parent`` as ``sharing`` says (one of SHARING):
    the first instance free for this mode, else a new empty one (``shared``, ``private``) or, for
    ``locked`` when some instance exists, the first one let go (waits as long as it takes).
    Raises ValueError for an unknown mode, OSError when the store cannot be written."""
    if sharing not in SHARING:
        raise ValueError(f"invalid cache sharing option: {sharing}")
    exclusive = sharing != "shared"
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(pfd, fcntl.LOCK_EX)
            have = instances(parent, name)
            for path in have:
                held = _try_hold(path, exclusive)
                if held is not None:
                    return held
            if not (sharing == "locked" and have):
                new = parent / (name if not have else f"{name}-{_next_number(have, name)}")
                new.mkdir()
                held = _try_hold(new, exclusive)
                assert held is not None  # made under the choice lock: no one else knows it yet
                return held
        finally:
            os.close(pfd)
        time.sleep(POLL_S)


def _next_number(have: list[Path], name: str) -> int:
    nums = [1 if p.name == name else int(p.name[len(name) + 1:]) for p in have]
    return max(nums) + 1
